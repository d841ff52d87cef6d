//! Rocket's request seen through the HTTP policy's request view.

use std::borrow::Cow;
use std::net::IpAddr;

use ratekeeper_http::{Headers, KeySource, Limits, Outcome, RequestView, SharedPolicy};
use rocket::Request;
use rocket::http::HeaderMap;

use crate::routes::RouteIndex;

struct HeaderView<'a>(&'a HeaderMap<'a>);

impl Headers for HeaderView<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get(name).map(str::as_bytes).collect()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get_one(name).map(str::as_bytes)
    }
}

/// Rocket's route pattern in the route table's syntax: `/users/<id>` becomes
/// `/users/{id}`, `/files/<path..>` becomes `/files/{*path}`.
pub(crate) fn pattern(rocket_path: &str) -> String {
    let mut out = String::with_capacity(rocket_path.len());
    let mut rest = rocket_path;
    while let Some(start) = rest.find('<') {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 1..).unwrap_or_default();
        let Some(end) = after.find('>') else {
            out.push_str(rest.get(start..).unwrap_or_default());
            return out;
        };
        let name = after.get(..end).unwrap_or_default();
        match name.strip_suffix("..") {
            Some(name) => {
                out.push_str("{*");
                out.push_str(name);
            }
            None => {
                out.push('{');
                out.push_str(name);
            }
        }
        out.push('}');
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// The path as Rocket routes on it: its segments percent-decoded, empty
/// ones (from `//` or a trailing `/`) dropped. A decoded `/` or `%` inside a
/// segment is written encoded again, so the segment stays one segment.
/// Borrowed when the path is already in that form.
pub(crate) fn routed_path<'a>(
    raw: &'a str,
    segments: impl Iterator<Item = &'a str>,
) -> Cow<'a, str> {
    let plain = !raw.contains('%') && !raw.contains("//") && (raw == "/" || !raw.ends_with('/'));
    if plain {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    for segment in segments {
        out.push('/');
        for c in segment.chars() {
            match c {
                '/' => out.push_str("%2F"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Asks `policy` about `request` (with `limits` in place of the route table's,
/// when given). The route pattern is the matched route's, or, before
/// routing, what `index` says Rocket will match; it is looked up only when
/// the policy reads it. The peer is the socket's (`Request::remote`), never
/// `client_ip()`, which believes `X-Real-IP` by default; proxies are the
/// policy's business. A store that decides at once (the memory store) is
/// asked without a future.
pub(crate) async fn decide(
    policy: &SharedPolicy,
    request: &Request<'_>,
    limits: Option<&Limits>,
    index: Option<&RouteIndex>,
) -> Outcome {
    let Some(peer): Option<IpAddr> = request.remote().map(|a| a.ip()) else {
        return Outcome::misconfigured(
            "no peer address for this request: the rate limiter cannot key it",
        );
    };
    let policy = policy.load();
    let uri_path = request.uri().path();
    // The path Rocket dispatches on: `/h%65alth`, `//health` and `/health/`
    // all reach the `/health` route, so all must be decided as `/health`.
    let path = routed_path(uri_path.as_str(), uri_path.segments());
    // A guard's own limits may key by the route where the policy does not.
    let reads_route = policy.reads_route()
        || limits
            .and_then(|l| l.key.as_ref())
            .is_some_and(KeySource::reads_route);
    let route = if reads_route {
        match (request.route(), index) {
            (Some(route), _) => Some(pattern(route.uri.path())),
            (None, Some(index)) => index.find(request.method(), &path).map(str::to_owned),
            (None, None) => None,
        }
    } else {
        None
    };
    let identity = crate::cache::RequestState::of(request).identity();
    let headers = HeaderView(request.headers());
    let view = RequestView {
        method: request.method().as_str(),
        path: &path,
        route: route.as_deref(),
        peer,
        headers: &headers,
        identity: identity.as_ref(),
    };
    policy.decide(&view, limits).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_seen_as_rocket_routes_them() {
        let routed = |raw: &str| {
            let uri = rocket::http::uri::Origin::parse(raw).unwrap();
            routed_path(uri.path().as_str(), uri.path().segments()).into_owned()
        };
        assert_eq!(routed("/health"), "/health");
        assert_eq!(routed("/h%65alth"), "/health");
        assert_eq!(routed("//health//"), "/health");
        assert_eq!(routed("/health/"), "/health");
        assert_eq!(routed("/"), "/");
        assert_eq!(routed("//"), "/");
        assert_eq!(routed("/a%2Fb/c"), "/a%2Fb/c");
        assert_eq!(routed("/a%25b"), "/a%25b");
        assert_eq!(routed("/users/%37"), "/users/7");
    }

    #[test]
    fn rocket_patterns_become_core_patterns() {
        assert_eq!(pattern("/users/<id>"), "/users/{id}");
        assert_eq!(pattern("/files/<path..>"), "/files/{*path}");
        assert_eq!(pattern("/a/<x>/b/<y>"), "/a/{x}/b/{y}");
        assert_eq!(pattern("/plain"), "/plain");
        assert_eq!(pattern("/broken/<x"), "/broken/<x");
    }
}
