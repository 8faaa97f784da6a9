//! What the SQL stores show of a sqlx error that is not the database's own
//! report: the kind of failure and nothing the driver quoted (decode
//! errors quote the value they could not decode, and the layer logs the
//! source of a store error).

use std::fmt;

/// Writes the kind of `error`, for any sqlx error but
/// [`sqlx::Error::Database`], whose codes each store names its own way.
pub(crate) fn describe_driver_error(
    error: &sqlx::Error,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match error {
        sqlx::Error::Io(error) => write!(f, "database I/O error ({:?})", error.kind()),
        sqlx::Error::Tls(_) => f.write_str("TLS error talking to the database"),
        sqlx::Error::PoolTimedOut => f.write_str("timed out waiting for a database connection"),
        sqlx::Error::PoolClosed => f.write_str("the database connection pool is closed"),
        sqlx::Error::WorkerCrashed => f.write_str("a database connection worker crashed"),
        sqlx::Error::Protocol(_) => f.write_str("unexpected message from the database"),
        sqlx::Error::Configuration(_) => f.write_str("database connection misconfigured"),
        // Column names come from the stores' own statements.
        sqlx::Error::ColumnDecode { index, .. } => {
            write!(f, "cannot decode the database column {index:?}")
        }
        sqlx::Error::ColumnNotFound(name) => write!(f, "no database column {name:?}"),
        sqlx::Error::Decode(_) => f.write_str("cannot decode a database value"),
        sqlx::Error::Encode(_) => f.write_str("cannot encode a database parameter"),
        sqlx::Error::RowNotFound => f.write_str("no database row returned"),
        _ => f.write_str("database driver error"),
    }
}
