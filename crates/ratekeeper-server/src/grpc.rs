//! Envoy's rate-limit service, v3 (`envoy.service.ratelimit.v3.RateLimitService`),
//! on the generated types of `envoy-types`.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as ShownUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tonic::{Request, Response, Status};

use crate::App;
use crate::service::{Answer, Check, Descriptor, Refusal, Unit};

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct Grpc(pub(crate) Arc<App>);

#[tonic::async_trait]
impl RateLimitService for Grpc {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let Ok(_permit) = self.0.in_flight.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "too many requests in flight; try again",
            ));
        };
        let check = check_of(request.into_inner())?;
        match self.0.service.decide(&check).await {
            Ok(answer) => Ok(Response::new(response_of(answer))),
            Err(Refusal::Invalid(m)) => Err(Status::invalid_argument(m)),
            Err(Refusal::Unavailable(m)) => Err(Status::unavailable(format!(
                "the rate-limit store is unavailable: {m}"
            ))),
        }
    }
}

fn check_of(request: RateLimitRequest) -> Result<Check, Status> {
    let descriptors = request
        .descriptors
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let limit = match d.limit {
                None => None,
                Some(l) => {
                    let unit = Unit::from_envoy(i64::from(l.unit)).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "descriptors[{i}].limit.unit {} is not a unit of time",
                            l.unit
                        ))
                    })?;
                    Some((u64::from(l.requests_per_unit), unit))
                }
            };
            Ok(Descriptor {
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                hits: d.hits_addend.map(|h| h.value),
                limit,
                negative: d.is_negative_hits,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Check {
        domain: request.domain,
        descriptors,
        // Unset (0 on the wire) means one.
        hits: u64::from(request.hits_addend.max(1)),
    })
}

fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn shown_unit(window: Duration) -> ShownUnit {
    match Unit::of(window) {
        Some(Unit::Second) => ShownUnit::Second,
        Some(Unit::Minute) => ShownUnit::Minute,
        Some(Unit::Hour) => ShownUnit::Hour,
        Some(Unit::Day) => ShownUnit::Day,
        Some(Unit::Week) => ShownUnit::Week,
        Some(Unit::Month) => ShownUnit::Month,
        Some(Unit::Year) => ShownUnit::Year,
        None => ShownUnit::Unknown,
    }
}

fn response_of(answer: Answer) -> RateLimitResponse {
    let code = |over: bool| if over { Code::OverLimit } else { Code::Ok } as i32;
    let statuses = answer
        .statuses
        .into_iter()
        .map(|s| DescriptorStatus {
            code: code(s.over_limit),
            current_limit: s.limit.as_ref().map(|l| RateLimit {
                name: l.name.clone(),
                requests_per_unit: u32::try_from(l.limit).unwrap_or(u32::MAX),
                unit: shown_unit(l.window) as i32,
            }),
            limit_remaining: u32::try_from(s.remaining).unwrap_or(u32::MAX),
            duration_until_reset: s.limit.is_some().then(|| duration(s.reset_after)),
            ..DescriptorStatus::default()
        })
        .collect();
    RateLimitResponse {
        overall_code: code(answer.over_limit),
        statuses,
        response_headers_to_add: answer
            .headers
            .into_iter()
            .map(|(key, value)| HeaderValue {
                key,
                value,
                ..HeaderValue::default()
            })
            .collect(),
        ..RateLimitResponse::default()
    }
}

/// Tonic answers a request it cannot decode (a string that is not UTF-8)
/// with INTERNAL; it is the caller's mistake, so INVALID_ARGUMENT.
pub(crate) fn decode_errors_are_invalid_arguments<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let decoding = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode")
        });
    if internal && decoding {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}
