//! What the policy answers for a request, in the `http` crate's types, and
//! the few pieces every framework adapter needs to apply it: the adapter
//! kit. An adapter translates its framework's request into a
//! [`RequestView`](crate::RequestView), asks the policy (at once when the
//! store can decide at once: [`PolicyGuard::now_or_later`](crate::PolicyGuard::now_or_later)),
//! and translates the [`Outcome`] into its framework's response.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ratekeeper_core::Decision;
use serde::Serialize;

use super::client_ip::Headers;
use super::policy::Admission;

/// What the adapter should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass the request on, and add these headers to the response.
    Proceed {
        /// Rate-limit headers for the response (empty when not limited).
        headers: Vec<(HeaderName, HeaderValue)>,
        /// The decision and a way to charge more, for handlers (`None` when
        /// the request was not limited: exempt, allowed, no rule; and when
        /// the policy gives handlers no decision,
        /// [`HttpPolicy::decision_for_handlers`](crate::HttpPolicy::decision_for_handlers),
        /// on a route with nothing to follow its handler).
        admission: Option<Admission>,
    },
    /// Answer without calling the handler.
    Respond {
        /// The status (429, 403, 503, the missing-key status, or 200 for a
        /// gRPC answer).
        status: StatusCode,
        /// The response's headers: its `content-type`, `retry-after` on
        /// denials and blocks, and the rate-limit headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// The JSON body (`None` for a gRPC answer, whose body is empty).
        body: Option<ErrorBody>,
        /// The decision, when one was made.
        decision: Option<Decision>,
    },
}

/// The JSON body of an answer: `{"error": "...", "message": "...",
/// "retry_after": N}`, the last only on denials and blocks.
///
/// ```
/// use ratekeeper_http::ErrorBody;
///
/// let body = ErrorBody::new("rate_limited", "too many requests; retry in 3 s").with_retry_after(3);
/// assert_eq!(
///     &body.to_json()[..],
///     br#"{"error":"rate_limited","message":"too many requests; retry in 3 s","retry_after":3}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    error: &'static str,
    message: Cow<'static, str>,
    retry_after: Option<u64>,
}

impl Serialize for ErrorBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let fields = if self.retry_after.is_some() { 3 } else { 2 };
        let mut s = serializer.serialize_struct("ErrorBody", fields)?;
        s.serialize_field("error", self.error)?;
        s.serialize_field("message", &*self.message)?;
        if let Some(seconds) = self.retry_after {
            s.serialize_field("retry_after", &seconds)?;
        }
        s.end()
    }
}

impl ErrorBody {
    /// A body with the machine-readable `error` code (`rate_limited`,
    /// `forbidden`, `blocked`, `missing_key`, `rate_limiter_unavailable`,
    /// `rate_limiter_misconfigured`) and a message for people.
    pub fn new(error: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            error,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same body, telling the client to retry in `seconds`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The machine-readable error code.
    pub fn error(&self) -> &'static str {
        self.error
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds until a retry can succeed, on denials and blocks.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Bytes {
        // A struct of strings and a number always serialises.
        serde_json::to_vec(self).map_or_else(|_| Bytes::new(), Bytes::from)
    }
}

impl Outcome {
    /// An answer with a JSON body, without a decision.
    pub(crate) fn answer(
        status: StatusCode,
        mut headers: Vec<(HeaderName, HeaderValue)>,
        body: ErrorBody,
    ) -> Self {
        headers.insert(
            0,
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        );
        Self::Respond {
            status,
            headers,
            body: Some(body),
            decision: None,
        }
    }

    /// The answer of an adapter that cannot apply the policy to a request
    /// (no peer address to key it by, a guard without its fairing): 500,
    /// error `rate_limiter_misconfigured`, with `message` saying what to fix.
    pub fn misconfigured(message: &'static str) -> Self {
        Self::answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            Vec::new(),
            ErrorBody::new("rate_limiter_misconfigured", message),
        )
    }

    /// This outcome for a request with `headers`: in gRPC's form
    /// ([`into_grpc`](Self::into_grpc)) when the request is gRPC, as it is
    /// otherwise. Only an answer differs, so only an answer looks.
    #[must_use]
    #[inline]
    pub fn for_request(self, headers: &dyn Headers) -> Self {
        match self {
            answer @ Self::Respond { .. } if super::grpc::is_grpc(headers) => answer.into_grpc(),
            other => other,
        }
    }
}

/// An answer as an `http` response: the status, the headers, and the JSON
/// body (empty for a gRPC answer). For adapters of frameworks built on the
/// `http` crate; map the body into the framework's body type.
pub fn response(
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<ErrorBody>,
) -> http::Response<Bytes> {
    let mut response = http::Response::new(body.map_or_else(Bytes::new, |b| b.to_json()));
    *response.status_mut() = status;
    add_headers(response.headers_mut(), headers);
    response
}

/// Adds an outcome's headers to a response's, replacing any of the same
/// name (the handler's own `content-type` on an answer, say).
#[inline]
pub fn add_headers(map: &mut HeaderMap, headers: Vec<(HeaderName, HeaderValue)>) {
    if headers.is_empty() {
        return;
    }
    map.reserve(headers.len());
    for (name, value) in headers {
        map.insert(name, value);
    }
}

/// The names the policy writes, as `'static` strings, for adapters of
/// frameworks with their own header types (actix-web, Rocket): a known name
/// needs no allocation.
pub fn static_name(name: &HeaderName) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
        "content-type",
        "grpc-status",
        "grpc-message",
    ];
    let text = name.as_str();
    KNOWN.iter().find(|known| **known == text).map_or_else(
        || Cow::Owned(text.to_owned()),
        |known| Cow::Borrowed(*known),
    )
}

/// An `http::HeaderMap` as the policy reads headers.
impl Headers for HeaderMap {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        HeaderMap::get_all(self, name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        HeaderMap::get(self, name).map(HeaderValue::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::names;
    use http::header::RETRY_AFTER;

    #[test]
    fn every_name_the_policy_writes_is_static() {
        for name in [
            names::X_RATELIMIT_LIMIT,
            names::X_RATELIMIT_REMAINING,
            names::X_RATELIMIT_RESET,
            names::RATELIMIT_POLICY,
            names::RATELIMIT,
            names::GRPC_STATUS,
            names::GRPC_MESSAGE,
            RETRY_AFTER,
            CONTENT_TYPE,
        ] {
            assert!(
                matches!(static_name(&name), Cow::Borrowed(s) if s == name.as_str()),
                "{name}"
            );
        }
        let other = HeaderName::from_static("x-other");
        assert!(matches!(static_name(&other), Cow::Owned(s) if s == "x-other"));
    }

    #[test]
    fn answers_are_json_with_their_headers() {
        let answer = Outcome::answer(
            StatusCode::TOO_MANY_REQUESTS,
            vec![
                (
                    names::RATELIMIT,
                    HeaderValue::from_static("\"api\";r=0;t=3"),
                ),
                (RETRY_AFTER, HeaderValue::from(3)),
            ],
            ErrorBody::new("rate_limited", "too many requests; retry in 3 s").with_retry_after(3),
        );
        let Outcome::Respond {
            status,
            headers,
            body,
            ..
        } = answer
        else {
            panic!("an answer")
        };
        let response = response(status, headers, body);
        assert_eq!(response.status(), 429);
        let h = response.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["retry-after"], "3");
        assert_eq!(h["ratelimit"], "\"api\";r=0;t=3");
        assert_eq!(
            response.body(),
            &br#"{"error":"rate_limited","message":"too many requests; retry in 3 s","retry_after":3}"#[..]
        );
        let misconfigured = Outcome::misconfigured("say \"why\"");
        let Outcome::Respond { status, body, .. } = misconfigured else {
            panic!("an answer")
        };
        assert_eq!(status, 500);
        assert_eq!(
            &body.unwrap().to_json()[..],
            br#"{"error":"rate_limiter_misconfigured","message":"say \"why\""}"#
        );
    }

    #[test]
    fn an_http_header_map_is_read_case_insensitively_in_order() {
        let mut map = HeaderMap::new();
        map.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        map.append("X-Forwarded-For", HeaderValue::from_static("2.2.2.2"));
        let headers: &dyn Headers = &map;
        assert_eq!(
            headers.get_all("x-forwarded-for"),
            [&b"1.1.1.1"[..], b"2.2.2.2"]
        );
        assert_eq!(headers.get("x-forwarded-for"), Some(&b"1.1.1.1"[..]));
        assert_eq!(headers.get("forwarded"), None);
    }
}
