//! Turning Redis failures into the core's typed errors.

use ratekeeper_core::{Error, ErrorKind};
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
        // Every error of the redis crate that holds an I/O error (a dropped
        // or refused connection among them) is of kind `Io`.
        K::Io | K::ClusterConnectionNotFound => {
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

#[cfg(test)]
mod tests {
    use std::io;

    use redis::{ErrorKind as K, RedisError, ServerErrorKind as S, make_extension_error};

    use super::*;

    /// The kind, transience and words of the error `err` maps to.
    fn mapped(err: RedisError) -> (ErrorKind, bool, String) {
        let e = redis(err, "EVALSHA");
        (e.kind(), e.is_transient(), e.message().to_owned())
    }

    fn general(kind: K) -> RedisError {
        RedisError::from((kind, "test"))
    }

    fn code(code: &str) -> RedisError {
        make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn every_failure_has_its_kind_and_transience() {
        let unavailable =
            |why: &str| (ErrorKind::Unavailable, true, format!("Redis EVALSHA {why}"));
        let refused = (
            ErrorKind::Unavailable,
            false,
            "Redis EVALSHA was refused by the server".to_owned(),
        );
        let cases: Vec<(&str, RedisError, (ErrorKind, bool, String))> = vec![
            (
                "timeout",
                io::Error::from(io::ErrorKind::TimedOut).into(),
                (
                    ErrorKind::Timeout,
                    true,
                    "Redis EVALSHA timed out".to_owned(),
                ),
            ),
            // An I/O error that is neither a timeout nor a dropped connection.
            (
                "io",
                io::Error::from(io::ErrorKind::PermissionDenied).into(),
                unavailable("lost its connection"),
            ),
            (
                "no cluster connection",
                general(K::ClusterConnectionNotFound),
                unavailable("lost its connection"),
            ),
            (
                "refused",
                io::Error::from(io::ErrorKind::ConnectionRefused).into(),
                unavailable("lost its connection"),
            ),
            (
                "reset",
                io::Error::from(io::ErrorKind::ConnectionReset).into(),
                unavailable("lost its connection"),
            ),
            (
                "cross slot",
                general(K::Server(S::CrossSlot)),
                (
                    ErrorKind::InvalidInput,
                    false,
                    "Redis EVALSHA named keys in different Cluster slots".to_owned(),
                ),
            ),
            ("auth", general(K::AuthenticationFailed), refused.clone()),
            ("noperm", general(K::Server(S::NoPerm)), refused.clone()),
            ("noauth", code("NOAUTH"), refused.clone()),
            ("wrongpass", code("WRONGPASS"), refused.clone()),
            (
                "config",
                general(K::InvalidClientConfig),
                (
                    ErrorKind::InvalidInput,
                    false,
                    "Redis EVALSHA is misconfigured".to_owned(),
                ),
            ),
            (
                "busy",
                code("BUSY"),
                unavailable("met a busy or full server"),
            ),
            ("oom", code("OOM"), unavailable("met a busy or full server")),
            (
                "wrongtype",
                code("WRONGTYPE"),
                (
                    ErrorKind::WrongType,
                    false,
                    "Redis EVALSHA met a key holding another type".to_owned(),
                ),
            ),
            (
                "other",
                code("NOPE"),
                (ErrorKind::Other, false, "Redis EVALSHA failed".to_owned()),
            ),
            (
                "parse",
                general(K::Parse),
                (ErrorKind::Other, false, "Redis EVALSHA failed".to_owned()),
            ),
        ];
        let failover = [
            S::BusyLoading,
            S::ReadOnly,
            S::MasterDown,
            S::TryAgain,
            S::ClusterDown,
            S::Moved,
            S::Ask,
        ]
        .into_iter()
        .map(|kind| {
            (
                "failover",
                general(K::Server(kind)),
                unavailable("met a server in failover or restart"),
            )
        });
        let sentinel = [
            K::MasterNameNotFoundBySentinel,
            K::NoValidReplicasFoundBySentinel,
            K::EmptySentinelList,
        ]
        .into_iter()
        .map(|kind| {
            (
                "sentinel",
                general(kind),
                unavailable("found no master through Sentinel"),
            )
        });
        for (name, err, expected) in cases.into_iter().chain(failover).chain(sentinel) {
            let shown = format!("{err:?}");
            assert_eq!(mapped(err), expected, "{name}: {shown}");
        }
    }

    #[test]
    fn the_cause_is_kept_and_a_timeout_names_its_bound() {
        let e = redis(code("OOM"), "EVALSHA");
        assert!(std::error::Error::source(&e).is_some());
        let t = timeout("EVALSHA", std::time::Duration::from_millis(250));
        assert_eq!(t.kind(), ErrorKind::Timeout);
        assert!(t.is_transient());
        assert_eq!(t.message(), "Redis EVALSHA did not answer within 250ms");
        let i = invalid("bad".to_owned());
        assert_eq!(
            (i.kind(), i.is_transient()),
            (ErrorKind::InvalidInput, false)
        );
    }
}
