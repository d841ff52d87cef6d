//! gRPC: the same outcomes, in the form gRPC clients expect.
//!
//! gRPC carries its status in the `grpc-status` header (or trailer) of an HTTP
//! 200 response, not in the HTTP status. A denial is `RESOURCE_EXHAUSTED` (8),
//! with `grpc-message` saying when to retry; the rate-limit headers and
//! `retry-after` go along as response metadata.

use super::client_ip::Headers;
use super::policy::Outcome;

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
pub const fn grpc_status(http_status: u16) -> u8 {
    match http_status {
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

/// The `message` field of the policy's JSON bodies.
fn message_of(body: &str) -> Option<String> {
    let start = body.find("\"message\":\"")? + "\"message\":\"".len();
    let rest = body.get(start..)?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
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
                let mut grpc = vec![
                    ("content-type", "application/grpc".to_owned()),
                    ("grpc-status", grpc_status(status).to_string()),
                ];
                if let Some(message) = message_of(&body) {
                    grpc.push(("grpc-message", percent_encode(&message)));
                }
                grpc.extend(headers);
                Self::Respond {
                    status: 200,
                    headers: grpc,
                    body: String::new(),
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
            assert_eq!(grpc_status(http), grpc, "{http}");
        }
    }

    #[test]
    fn a_denial_becomes_resource_exhausted() {
        let denial = Outcome::Respond {
            status: 429,
            headers: vec![("retry-after", "3".to_owned())],
            body: r#"{"error":"rate_limited","message":"too many requests; retry in 3 s","retry_after":3}"#
                .to_owned(),
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
        assert_eq!((status, body.as_str()), (200, ""));
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("grpc-status"), Some("8"));
        assert_eq!(get("grpc-message"), Some("too many requests; retry in 3 s"));
        assert_eq!(get("retry-after"), Some("3"));
        assert_eq!(get("content-type"), Some("application/grpc"));
        assert_eq!(grpc_status(503), 14);
        assert_eq!(percent_encode("50% é"), "50%25 %C3%A9");
    }
}
