//! gRPC: the same outcomes, in the form gRPC clients expect.
//!
//! gRPC carries its status in the `grpc-status` header (or trailer) of an HTTP
//! 200 response, not in the HTTP status. A denial is `RESOURCE_EXHAUSTED` (8),
//! with `grpc-message` saying when to retry; the rate-limit headers and
//! `retry-after` go along as response metadata.

use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

use super::client_ip::Headers;
use super::headers::names;
use super::outcome::Outcome;

/// Whether a request is gRPC: its `content-type` is `application/grpc` or
/// `application/grpc+…` (`+proto`, `+json`).
pub fn is_grpc(headers: &dyn Headers) -> bool {
    headers.get("content-type").is_some_and(|v| {
        v.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"))
    })
}

/// The gRPC status code for the HTTP status of an [`Outcome::Respond`]:
/// 429 → 8 `RESOURCE_EXHAUSTED`, 403 → 7 `PERMISSION_DENIED`, 401 → 16
/// `UNAUTHENTICATED`, 400 → 3 `INVALID_ARGUMENT`, 503 → 14 `UNAVAILABLE`,
/// anything else → 13 `INTERNAL` (a configured denial status other than 429
/// maps by the same table).
pub fn grpc_status(http_status: StatusCode) -> u8 {
    match http_status.as_u16() {
        429 => 8,
        403 => 7,
        401 => 16,
        400 => 3,
        503 => 14,
        _ => 13,
    }
}

/// `grpc-message` must be percent-encoded outside printable ASCII, and `%`
/// itself.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Outcome {
    /// This outcome for a gRPC request: a `Respond` becomes a trailers-only
    /// gRPC response — HTTP 200, `content-type: application/grpc`,
    /// `grpc-status` from [`grpc_status`], `grpc-message` from the body's
    /// message, an empty body — keeping the rate-limit headers and
    /// `retry-after` as metadata. A `Proceed` is unchanged.
    #[must_use]
    pub fn into_grpc(self) -> Self {
        match self {
            Self::Respond {
                status,
                headers,
                body,
                decision,
            } => {
                let mut grpc = Vec::with_capacity(headers.len() + 3);
                grpc.push((CONTENT_TYPE, HeaderValue::from_static("application/grpc")));
                grpc.push((
                    names::GRPC_STATUS,
                    HeaderValue::from(u16::from(grpc_status(status))),
                ));
                if let Some(message) = body
                    .as_ref()
                    .and_then(|b| HeaderValue::try_from(percent_encode(b.message())).ok())
                {
                    grpc.push((names::GRPC_MESSAGE, message));
                }
                grpc.extend(
                    headers
                        .into_iter()
                        .filter(|(name, _)| *name != CONTENT_TYPE),
                );
                Self::Respond {
                    status: StatusCode::OK,
                    headers: grpc,
                    body: None,
                    decision,
                }
            }
            proceed @ Self::Proceed { .. } => proceed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorBody;

    #[test]
    fn grpc_requests_are_recognised_by_content_type() {
        for (value, grpc) in [
            (&b"application/grpc"[..], true),
            (b"application/grpc+proto", true),
            (b"application/grpc; charset=utf-8", true),
            (b"application/grpc-web", false),
            (b"application/json", false),
        ] {
            let headers: &[(&str, &[u8])] = &[("content-type", value)];
            assert_eq!(is_grpc(&headers), grpc, "{value:?}");
        }
        let none: &[(&str, &[u8])] = &[];
        assert!(!is_grpc(&none));
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        for (http, grpc) in [
            (429, 8),
            (403, 7),
            (401, 16),
            (400, 3),
            (503, 14),
            (500, 13),
            (418, 13),
        ] {
            assert_eq!(
                grpc_status(StatusCode::from_u16(http).unwrap()),
                grpc,
                "{http}"
            );
        }
    }

    #[test]
    fn a_denial_becomes_resource_exhausted() {
        let denial = Outcome::Respond {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers: vec![
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (http::header::RETRY_AFTER, HeaderValue::from(3)),
            ],
            body: Some(
                ErrorBody::new("rate_limited", "too many requests; retry in 3 s — soon")
                    .with_retry_after(3),
            ),
            decision: None,
        };
        let Outcome::Respond {
            status,
            headers,
            body,
            ..
        } = denial.into_grpc()
        else {
            panic!("still a response")
        };
        assert_eq!((status, body), (StatusCode::OK, None));
        let get = |name: &str| {
            let values: Vec<_> = headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap())
                .collect();
            assert!(values.len() <= 1, "{name} once: {values:?}");
            values.first().copied()
        };
        assert_eq!(get("grpc-status"), Some("8"));
        assert_eq!(
            get("grpc-message"),
            Some("too many requests; retry in 3 s %E2%80%94 soon")
        );
        assert_eq!(get("retry-after"), Some("3"));
        assert_eq!(get("content-type"), Some("application/grpc"));
        assert_eq!(grpc_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(percent_encode("50% é"), "50%25 %C3%A9");
    }

    #[test]
    fn only_answers_to_grpc_requests_change() {
        let grpc: &[(&str, &[u8])] = &[("content-type", b"application/grpc")];
        let json: &[(&str, &[u8])] = &[];
        let answer = Outcome::misconfigured("m");
        assert_eq!(answer.clone().for_request(&json), answer);
        assert_eq!(answer.clone().for_request(&grpc), answer.into_grpc());
        let proceed = Outcome::Proceed {
            headers: Vec::new(),
            admission: None,
        };
        assert_eq!(proceed.clone().for_request(&grpc), proceed);
    }
}
