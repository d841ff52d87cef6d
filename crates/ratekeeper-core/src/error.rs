//! The error type of every fallible runtime operation.
//!
//! Being rate limited is **not** an error: a denial is a [`Decision`](crate::Decision)
//! value. `Err` means the limiter could not decide — the store failed, timed out,
//! held corrupt data, or the caller asked for something impossible.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// What went wrong, coarse enough for a fail-open / fail-closed policy to act on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The store could not be reached or refused the operation (connection lost,
    /// server down, database locked). Transient by default.
    Unavailable,
    /// The store did not answer within its deadline. Transient by default.
    Timeout,
    /// Optimistic concurrency gave up after too many lost races on the same keys.
    /// Transient by default.
    Contention,
    /// The store was closed with [`Storage::close`](crate::Storage::close).
    Closed,
    /// A stored value could not be decoded as rate-limit state.
    CorruptState,
    /// A key-value operation met a value of the wrong shape (e.g. `increment`
    /// on a value that is not an integer).
    WrongType,
    /// The request can never be satisfied: its cost exceeds the capacity of a rule.
    CostExceedsCapacity,
    /// The caller passed something invalid (an empty rule list, a bad URL, ...).
    InvalidInput,
    /// The store is at its size bound and holds nothing it may drop: every
    /// entry it examined is state that still denies (a spent limit, a
    /// penalty), which it never evicts, since evicting it would reset a
    /// limit. A new key is not stored until entries expire. Not transient by
    /// default: it says nothing about the store's health (a circuit breaker
    /// does not count it).
    Full,
    /// The store does not offer this operation: a store that implements only
    /// the decision step answers the key-value operations it has not written
    /// with this kind (see [`Storage`](crate::Storage)).
    Unsupported,
    /// Anything else a store reports.
    Other,
}

impl ErrorKind {
    /// Whether errors of this kind are transient unless a store says otherwise.
    pub const fn is_transient_by_default(self) -> bool {
        matches!(self, Self::Unavailable | Self::Timeout | Self::Contention)
    }

    /// A short, stable name for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Contention => "contention",
            Self::Closed => "closed",
            Self::CorruptState => "corrupt_state",
            Self::WrongType => "wrong_type",
            Self::CostExceedsCapacity => "cost_exceeds_capacity",
            Self::InvalidInput => "invalid_input",
            Self::Full => "full",
            Self::Unsupported => "unsupported",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the limiter or a store: a kind, a message, whether retrying may
/// help, and the underlying cause.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    transient: bool,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; transience follows [`ErrorKind::is_transient_by_default`].
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            transient: kind.is_transient_by_default(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides whether retrying the operation may succeed.
    #[must_use]
    pub fn with_transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation later may succeed (a fail-open policy
    /// usually applies only to transient errors).
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The human-readable message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error a closed store returns for every operation.
    pub fn closed() -> Self {
        Self::new(ErrorKind::Closed, "the store is closed")
    }

    /// The error a store returns for an operation it does not offer:
    /// [`ErrorKind::Unsupported`], naming the operation.
    pub fn unsupported(operation: &'static str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("this store does not support `{operation}`"),
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("transient", &self.transient);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.message, self.kind)?;
        if self.transient {
            f.write_str(", transient")?;
        }
        f.write_str(")")?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transience_follows_kind_unless_overridden() {
        assert!(Error::new(ErrorKind::Timeout, "slow").is_transient());
        assert!(!Error::new(ErrorKind::CorruptState, "bad").is_transient());
        assert!(
            Error::new(ErrorKind::Other, "x")
                .with_transient(true)
                .is_transient()
        );
    }

    #[test]
    fn display_names_kind_and_source() {
        let io = std::io::Error::other("socket closed");
        let e = Error::new(ErrorKind::Unavailable, "redis unreachable").with_source(io);
        assert_eq!(
            e.to_string(),
            "redis unreachable (unavailable, transient): socket closed"
        );
        assert!(StdError::source(&e).is_some());
    }
}
