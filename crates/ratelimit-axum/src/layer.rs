//! The layer.

use std::sync::Arc;

use ratelimit_core::http::HttpPolicy;
use tower::Layer;

use crate::service::RateLimit;

/// Applies an [`HttpPolicy`] to every request of the wrapped service.
///
/// Cheap to clone, and clones share the policy and its store: one limit holds
/// across every connection, whether the layer wraps a whole router, a nested
/// router, or one route (`route_layer`).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    policy: Arc<HttpPolicy>,
}

impl RateLimitLayer {
    /// A layer applying `policy`.
    pub fn new(policy: HttpPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.policy.clone())
    }
}
