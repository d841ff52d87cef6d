//! Turning SQLite and pool failures into the core's typed errors.

use std::path::Path;

use ratelimit_core::{Error, ErrorKind};
use rusqlite::ErrorCode;

/// Describes where a store lives, for error messages.
pub(crate) fn describe(path: Option<&Path>) -> String {
    path.map_or_else(
        || "in-memory SQLite database".to_owned(),
        |p| format!("SQLite database {}", p.display()),
    )
}

/// Maps a SQLite error: a busy or locked database is transient (another
/// process holds the write lock past the busy timeout); a read-only, full or
/// corrupt file is not.
pub(crate) fn sqlite(err: rusqlite::Error, path: Option<&Path>) -> Error {
    let place = describe(path);
    let (kind, transient, what) = match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            ErrorKind::Unavailable,
            true,
            "is busy (another writer holds the lock)",
        ),
        Some(ErrorCode::ReadOnly) => (ErrorKind::Unavailable, false, "is read-only"),
        Some(ErrorCode::DiskFull) => (ErrorKind::Unavailable, true, "is full (no space left)"),
        Some(ErrorCode::NotADatabase) => {
            (ErrorKind::InvalidInput, false, "is not a SQLite database")
        }
        Some(ErrorCode::DatabaseCorrupt) => (ErrorKind::CorruptState, false, "is corrupt"),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            (ErrorKind::Unavailable, false, "cannot be opened")
        }
        Some(ErrorCode::SystemIoFailure) => {
            (ErrorKind::Unavailable, true, "failed with an I/O error")
        }
        _ => (ErrorKind::Other, false, "failed"),
    };
    Error::new(kind, format!("{place} {what}"))
        .with_transient(transient)
        .with_source(err)
}

/// Whether `err` is SQLite's "database or disk is full".
pub(crate) fn is_disk_full(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|e| e.downcast_ref::<rusqlite::Error>())
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(ErrorCode::DiskFull)
}

pub(crate) fn pool(err: r2d2::Error, path: Option<&Path>) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "no connection to the {} became free in time",
            describe(path)
        ),
    )
    .with_source(err)
}

pub(crate) fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}
