//! Turning SQLite and pool failures into the core's typed errors.

use std::path::Path;

use ratekeeper_core::{Error, ErrorKind};
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

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    fn mapped(code: i32, path: Option<&Path>) -> Error {
        sqlite(
            rusqlite::Error::SqliteFailure(ffi::Error::new(code), None),
            path,
        )
    }

    /// Each SQLite failure becomes the kind, transience and words the
    /// fail-open / fail-closed modes and the operators read.
    #[test]
    fn sqlite_errors_map_to_kinds_transience_and_words() {
        use ErrorKind::{CorruptState, InvalidInput, Other, Unavailable};
        let path = Path::new("/var/lib/app/rl.db");
        for (code, kind, transient, words) in [
            (
                ffi::SQLITE_BUSY,
                Unavailable,
                true,
                "is busy (another writer holds the lock)",
            ),
            (
                ffi::SQLITE_LOCKED,
                Unavailable,
                true,
                "is busy (another writer holds the lock)",
            ),
            (ffi::SQLITE_READONLY, Unavailable, false, "is read-only"),
            (
                ffi::SQLITE_FULL,
                Unavailable,
                true,
                "is full (no space left)",
            ),
            (
                ffi::SQLITE_NOTADB,
                InvalidInput,
                false,
                "is not a SQLite database",
            ),
            (ffi::SQLITE_CORRUPT, CorruptState, false, "is corrupt"),
            (ffi::SQLITE_CANTOPEN, Unavailable, false, "cannot be opened"),
            (ffi::SQLITE_PERM, Unavailable, false, "cannot be opened"),
            (
                ffi::SQLITE_IOERR,
                Unavailable,
                true,
                "failed with an I/O error",
            ),
            (ffi::SQLITE_MISMATCH, Other, false, "failed"),
        ] {
            let e = mapped(code, Some(path));
            assert_eq!((e.kind(), e.is_transient()), (kind, transient), "{code}");
            assert_eq!(
                e.message(),
                format!("SQLite database /var/lib/app/rl.db {words}")
            );
        }
        assert_eq!(
            mapped(ffi::SQLITE_CORRUPT, None).message(),
            "in-memory SQLite database is corrupt"
        );
        assert!(is_disk_full(&mapped(ffi::SQLITE_FULL, None)));
        assert!(!is_disk_full(&mapped(ffi::SQLITE_IOERR, None)));
        assert!(!is_disk_full(&Error::new(ErrorKind::Unavailable, "full")));
    }
}
