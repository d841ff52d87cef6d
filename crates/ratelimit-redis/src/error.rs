//! Turning Redis failures into the core's typed errors.

use ratelimit_core::{Error, ErrorKind};
use redis::{RedisError, ServerErrorKind};

pub(crate) fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

/// Maps a `redis` crate error from `what` (an operation, for the message).
///
/// Lost or refused connections, timeouts and the states a server passes
/// through during a failover or a restart (`LOADING`, `READONLY`,
/// `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`, a busy script) are transient;
/// bad credentials, missing permissions and client-side misconfiguration are
/// not.
pub(crate) fn redis(err: RedisError, what: &str) -> Error {
    use redis::ErrorKind as K;
    let (kind, transient, why) = match err.kind() {
        _ if err.is_timeout() => (ErrorKind::Timeout, true, "timed out"),
        K::Io | K::ClusterConnectionNotFound => {
            (ErrorKind::Unavailable, true, "lost its connection")
        }
        _ if err.is_connection_dropped() || err.is_connection_refusal() => {
            (ErrorKind::Unavailable, true, "lost its connection")
        }
        K::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => (
            ErrorKind::Unavailable,
            true,
            "met a server in failover or restart",
        ),
        K::Server(ServerErrorKind::CrossSlot) => (
            ErrorKind::InvalidInput,
            false,
            "named keys in different Cluster slots",
        ),
        K::AuthenticationFailed | K::Server(ServerErrorKind::NoPerm) => {
            (ErrorKind::Unavailable, false, "was refused by the server")
        }
        K::InvalidClientConfig => (ErrorKind::InvalidInput, false, "is misconfigured"),
        K::MasterNameNotFoundBySentinel
        | K::NoValidReplicasFoundBySentinel
        | K::EmptySentinelList => (
            ErrorKind::Unavailable,
            true,
            "found no master through Sentinel",
        ),
        _ if err.code() == Some("BUSY") || err.code() == Some("OOM") => {
            (ErrorKind::Unavailable, true, "met a busy or full server")
        }
        _ if err.code() == Some("WRONGTYPE") => (
            ErrorKind::WrongType,
            false,
            "met a key holding another type",
        ),
        _ if err.code() == Some("NOAUTH") || err.code() == Some("WRONGPASS") => {
            (ErrorKind::Unavailable, false, "was refused by the server")
        }
        _ => (ErrorKind::Other, false, "failed"),
    };
    Error::new(kind, format!("Redis {what} {why}"))
        .with_transient(transient)
        .with_source(err)
}

/// The error of a store call that did not finish within the response timeout.
pub(crate) fn timeout(what: &str, after: std::time::Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("Redis {what} did not answer within {after:?}"),
    )
}
