//! The database layout, created on first open and versioned in
//! `PRAGMA user_version`.

use std::path::Path;

use ratekeeper_core::{Error, ErrorKind, Result};
use rusqlite::Connection;

use crate::error::sqlite;

/// The layout this version writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// One table: every key with its value and expiry (µs since the epoch). Reads
/// ignore expired rows; the cleanup deletes them through the expiry index.
const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS ratelimit_kv (
        key        TEXT    PRIMARY KEY NOT NULL,
        value      BLOB    NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS ratelimit_kv_expires_at ON ratelimit_kv (expires_at);
";

/// Checks the file and creates the layout if it is new. A file that is not a
/// SQLite database, is read-only, or was written by a newer version is an
/// error naming the path; nothing is ever recreated.
pub(crate) fn prepare(conn: &mut Connection, path: Option<&Path>) -> Result<()> {
    let place = crate::error::describe(path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| sqlite(e, path))?;
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{place} has schema version {version}, newer than this version of ratekeeper-sqlite \
                 understands ({SCHEMA_VERSION}); upgrade ratekeeper-sqlite or use another file"
            ),
        ));
    }
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| sqlite(e, path))?
    {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "{place} is read-only: the store needs to write to it (and to its -wal and -shm files)"
            ),
        )
        // Retrying will not make the file writable.
        .with_transient(false));
    }
    if version < SCHEMA_VERSION {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sqlite(e, path))?;
        tx.execute_batch(CREATE).map_err(|e| sqlite(e, path))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| sqlite(e, path))?;
        tx.commit().map_err(|e| sqlite(e, path))?;
    }
    Ok(())
}
