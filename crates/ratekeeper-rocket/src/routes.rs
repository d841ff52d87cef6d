//! Rocket's routes, looked up before routing: the every-route fairing
//! decides in `on_request`, when Rocket has not matched a route yet, and a
//! policy keyed by route (`KeySource::Route`) still wants the pattern.

use std::collections::HashMap;

use rocket::Route;
use rocket::http::Method;

use crate::view::pattern;

/// The application's route patterns by method, in the route table's syntax.
#[derive(Debug, Default)]
pub(crate) struct RouteIndex {
    by_method: HashMap<Method, matchit::Router<String>>,
}

impl RouteIndex {
    /// Indexes `routes`. Where two routes share a path shape, the better
    /// ranked one (Rocket's lower rank) names it; query and format
    /// constraints do not change a path's pattern, so they are not needed.
    pub(crate) fn new<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Self {
        let mut routes: Vec<&Route> = routes.into_iter().collect();
        routes.sort_by_key(|r| r.rank);
        let mut by_method: HashMap<Method, matchit::Router<String>> = HashMap::new();
        for route in routes {
            let core = pattern(route.uri.path());
            let router = by_method.entry(route.method).or_default();
            // A conflict means a better ranked route already holds the shape
            // and names what both would match. (A shape matchit cannot
            // express is left out: its paths are keyed by themselves.)
            let _ = router.insert(core.clone(), core.clone());
            // A trailing `<path..>` also matches no segment at all.
            if let Some(base) = core.rfind("/{*").and_then(|at| core.get(..at)) {
                let _ = router.insert(format!("{base}/"), core.clone());
                if !base.is_empty() {
                    let _ = router.insert(base.to_owned(), core.clone());
                }
            }
        }
        Self { by_method }
    }

    /// The pattern of the route `method path` would reach, if one would.
    /// `HEAD` falls back to `GET` routes, as in Rocket.
    pub(crate) fn find(&self, method: Method, path: &str) -> Option<&str> {
        let lookup = |m: Method| {
            self.by_method
                .get(&m)
                .and_then(|r| r.at(path).ok())
                .map(|found| found.value.as_str())
        };
        lookup(method).or_else(|| {
            (method == Method::Head)
                .then(|| lookup(Method::Get))
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str, rank: isize) -> Route {
        #[derive(Clone)]
        struct Nothing;
        #[rocket::async_trait]
        impl rocket::route::Handler for Nothing {
            async fn handle<'r>(
                &self,
                request: &'r rocket::Request<'_>,
                _: rocket::Data<'r>,
            ) -> rocket::route::Outcome<'r> {
                rocket::route::Outcome::from(request, ())
            }
        }
        Route::ranked(rank, method, path, Nothing)
    }

    #[test]
    fn finds_patterns_as_rocket_routes() {
        let routes = [
            route(Method::Get, "/users/<id>", 0),
            route(Method::Get, "/users/new", 0),
            route(Method::Post, "/users/<user>/posts?<page>", 0),
            route(Method::Get, "/files/<path..>", 0),
            route(Method::Get, "/<any..>", 100),
        ];
        let index = RouteIndex::new(&routes);
        assert_eq!(index.find(Method::Get, "/users/7"), Some("/users/{id}"));
        assert_eq!(index.find(Method::Get, "/users/new"), Some("/users/new"));
        assert_eq!(index.find(Method::Head, "/users/7"), Some("/users/{id}"));
        assert_eq!(
            index.find(Method::Post, "/users/7/posts"),
            Some("/users/{user}/posts")
        );
        assert_eq!(
            index.find(Method::Get, "/files/a/b"),
            Some("/files/{*path}")
        );
        assert_eq!(index.find(Method::Get, "/files"), Some("/files/{*path}"));
        assert_eq!(index.find(Method::Get, "/elsewhere/x"), Some("/{*any}"));
        assert_eq!(index.find(Method::Delete, "/users/7"), None);
    }
}
