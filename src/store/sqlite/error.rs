//! How sqlx errors become [`StoreError`]s, shown without anything SQLite or
//! the driver quoted.
//!
//! The mapping is described under "Errors" on
//! [`SqliteStore`](super::SqliteStore).

use std::fmt;

use sqlx::error::DatabaseError;

use crate::store::sql_common::error::{DatabaseCodes, Variant};
use crate::store::StoreError;

/// SQLite's primary result codes this store tells apart (the low byte of
/// an extended code).
const SQLITE_ERROR: i64 = 1;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;
const SQLITE_TOOBIG: i64 = 18;
const SQLITE_MISMATCH: i64 = 20;
/// `SQLITE_CONSTRAINT_DATATYPE`: a value of the wrong type for a column of
/// a `STRICT` table.
const SQLITE_CONSTRAINT_DATATYPE: i64 = 3091;

/// Maps a sqlx error to the store error kind the layer needs (see
/// `sql_common::error`). The source, which the layer may log, shows
/// a database report by its extended result code and that code's name only.
pub(super) fn store_error(error: sqlx::Error) -> StoreError {
    crate::store::sql_common::error::store_error::<sqlx::Sqlite>(error)
}

/// SQLite's messages can name values, so a report is shown by its
/// extended result code and that code's name only.
impl DatabaseCodes for sqlx::Sqlite {
    const NAME: &'static str = "SqliteError";

    fn variant(report: &dyn DatabaseError) -> Variant {
        match report.code().and_then(|code| code.parse::<i64>().ok()) {
            Some(code) if means_unavailable(code) => StoreError::Unavailable,
            Some(code) if means_rejected(code) => StoreError::Rejected,
            // SQLite reports JSON text it cannot parse as a plain
            // SQLITE_ERROR; the JSON this store sends is serde_json's, so it
            // is the stored `data`.
            Some(code)
                if code & 0xff == SQLITE_ERROR && report.message().contains("malformed JSON") =>
            {
                StoreError::Corrupt
            }
            _ => StoreError::Backend,
        }
    }

    fn describe(report: &dyn DatabaseError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match report.code().and_then(|code| code.parse::<i64>().ok()) {
            Some(code) => write!(f, "database error {code} ({})", code_name(code)),
            None => f.write_str("database error without a result code"),
        }
    }
}

/// Whether a result code says "not serving right now": the database is
/// locked by another connection past the busy timeout (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes), out of memory or disk, or
/// the file cannot be read or opened.
fn means_unavailable(code: i64) -> bool {
    matches!(
        code & 0xff,
        SQLITE_BUSY
            | SQLITE_LOCKED
            | SQLITE_NOMEM
            | SQLITE_IOERR
            | SQLITE_FULL
            | SQLITE_CANTOPEN
            | SQLITE_PROTOCOL
    )
}

/// Whether a result code says "this value cannot be stored": too big for
/// SQLite's length limit, or of a type a `STRICT` column refuses (an
/// integer beyond 64 bits that SQLite turned into a real, say).
fn means_rejected(code: i64) -> bool {
    code == SQLITE_CONSTRAINT_DATATYPE || matches!(code & 0xff, SQLITE_TOOBIG | SQLITE_MISMATCH)
}

/// The name of a primary result code, as in SQLite's `sqlite3.h`.
fn code_name(code: i64) -> &'static str {
    match code & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        16 => "SQLITE_EMPTY",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        24 => "SQLITE_FORMAT",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => "unknown result code",
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as StdError;

    use super::*;

    #[test]
    fn busy_locked_and_io_trouble_are_unavailable() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_TIMEOUT,
        // SQLITE_LOCKED, SQLITE_LOCKED_SHAREDCACHE, SQLITE_IOERR_READ,
        // SQLITE_FULL, SQLITE_CANTOPEN.
        for code in [5, 517, 773, 6, 262, 266, 13, 14] {
            assert!(means_unavailable(code), "{code}");
        }
        for code in [1, 19, 2067, 3091, 11, 26, 8] {
            assert!(!means_unavailable(code), "{code}");
        }
    }

    #[test]
    fn values_sqlite_cannot_hold_are_rejected() {
        for code in [18, 20, 3091] {
            assert!(means_rejected(code), "{code}");
        }
        // A primary key or NOT NULL violation is no client's doing.
        for code in [19, 1555, 1299, 1] {
            assert!(!means_rejected(code), "{code}");
        }
    }

    #[test]
    fn undecodable_values_are_corrupt_and_shown_without_the_value() {
        let decode = sqlx::Error::ColumnDecode {
            index: "\"data\"".into(),
            source: "invalid type: string \"secret-card-4111\"".into(),
        };
        let error = store_error(decode);
        assert!(matches!(error, StoreError::Corrupt(_)));
        let logged = StdError::source(&error).expect("a source");
        assert_eq!(
            logged.to_string(),
            "cannot decode the database column \"\\\"data\\\"\""
        );
        assert!(!format!("{error:?} {logged:?}").contains("secret-card"));
        let sqlx_error = logged.source().expect("the sqlx error is its source");
        assert!(sqlx_error.downcast_ref::<sqlx::Error>().is_some());
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
        assert_eq!(code_name(517), "SQLITE_BUSY");
        assert_eq!(code_name(3091), "SQLITE_CONSTRAINT");
    }
}
