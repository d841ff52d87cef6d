//! The layer.

use std::net::IpAddr;
use std::sync::Arc;

use http::Extensions;
use ratelimit_core::http::HttpPolicy;
use tower::Layer;

use crate::service::{PeerFn, RateLimit, connect_info_peer};

/// Applies an [`HttpPolicy`] to every request of the wrapped service.
///
/// Cheap to clone, and clones share the policy and its store: one limit holds
/// across every connection, whether the layer wraps a whole router, a nested
/// router, or one route (`route_layer`).
#[derive(Clone)]
pub struct RateLimitLayer {
    policy: Arc<HttpPolicy>,
    peer: PeerFn,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer applying `policy`; the peer address comes from axum's
    /// `ConnectInfo<SocketAddr>` (or a `SocketAddr` in the request
    /// extensions).
    pub fn new(policy: HttpPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            peer: Arc::new(connect_info_peer),
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
        self.peer = Arc::new(peer);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.policy), Arc::clone(&self.peer))
    }
}
