//! The layer.

use std::net::IpAddr;
use std::sync::Arc;

use http::Extensions;
use ratekeeper_http::SharedPolicy;
use tower::Layer;

use crate::service::{RateLimit, Shared, connect_info_peer};

/// Applies an [`HttpPolicy`](ratekeeper_http::HttpPolicy) to every
/// request of the wrapped service.
///
/// Cheap to clone, and clones share the policy and its store: one limit holds
/// across every connection, whether the layer wraps a whole router, a nested
/// router, or one route (`route_layer`). The policy can be replaced while
/// the server runs, through the [`SharedPolicy`] the layer was given (or
/// [`policy`](Self::policy)).
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer applying `policy` (an `HttpPolicy`, or a [`SharedPolicy`] to
    /// replace it later); the peer address comes from axum's
    /// `ConnectInfo<SocketAddr>` (or a `SocketAddr` in the request
    /// extensions).
    pub fn new(policy: impl Into<SharedPolicy>) -> Self {
        Self {
            shared: Arc::new(Shared {
                policy: policy.into(),
                peer: Arc::new(connect_info_peer),
            }),
        }
    }

    /// Finds the peer address with `peer` instead, for servers that record
    /// it elsewhere. For tonic:
    /// `.peer(|e| e.get::<tonic::transport::server::TcpConnectInfo>()?.remote_addr().map(|a| a.ip()))`.
    #[must_use]
    pub fn peer(
        mut self,
        peer: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.shared).peer = Arc::new(peer);
        self
    }

    /// The policy, replaceable while the server runs.
    pub fn policy(&self) -> &SharedPolicy {
        &self.shared.policy
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.shared))
    }
}
