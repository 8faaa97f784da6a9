//! How both SQL stores turn sqlx errors into [`StoreError`]s, and show them
//! with nothing the database or the driver quoted.
//!
//! The layer logs the source of a [`StoreError`]. A database's report can
//! quote the statement's parameters, which are session data, and sqlx's
//! decode errors quote the value they could not decode; so the source is a
//! [`SqlxError`], whose `Display` and `Debug` show only the kind of failure
//! and, for a database's own report, its code and the code's name. The
//! sqlx error stays reachable as that error's own
//! [`source`](std::error::Error::source), for code that asks for it on
//! purpose. What a database's codes mean is each store's own
//! ([`DatabaseCodes`]); the mapping of each store is described under
//! "Errors" on its type.

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;

use sqlx::error::DatabaseError;

use crate::store::StoreError;

/// The [`StoreError`] variant an error becomes, e.g.
/// `StoreError::Unavailable`.
pub(crate) type Variant = fn(Box<dyn StdError + Send + Sync>) -> StoreError;

/// What a database's own error reports mean, and how they are shown: the
/// part of the error mapping that each store (each database) has its own.
pub(crate) trait DatabaseCodes: 'static {
    /// The name the error shows in `Debug`, e.g. `PostgresError`.
    const NAME: &'static str;

    /// The variant a database's own report becomes, by its code.
    fn variant(report: &dyn DatabaseError) -> Variant;

    /// Writes a database report's code and the code's name, and nothing of
    /// its message.
    fn describe(report: &dyn DatabaseError, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

/// Maps a sqlx error to the store error kind the layer needs. The source
/// is the sqlx error wrapped in [`SqlxError`], which the layer may log.
///
/// Connection, I/O and TLS failures, pool time-outs and a crashed worker
/// are [`StoreError::Unavailable`]; values that cannot be decoded are
/// [`StoreError::Corrupt`]; the database's own reports are what `D` says;
/// anything else is [`StoreError::Backend`].
pub(crate) fn store_error<D: DatabaseCodes>(error: sqlx::Error) -> StoreError {
    let variant: Variant = match &error {
        sqlx::Error::Database(report) => D::variant(&**report),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt,
        _ => StoreError::Backend,
    };
    variant(Box::new(SqlxError::<D>(error, PhantomData)))
}

/// A sqlx error, shown without anything the database or the driver quoted
/// (see the module docs); `D` shows the database's own reports.
pub(crate) struct SqlxError<D>(sqlx::Error, PhantomData<fn() -> D>);

impl<D: DatabaseCodes> fmt::Display for SqlxError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            sqlx::Error::Database(report) => D::describe(&**report, f),
            other => describe_driver_error(other, f),
        }
    }
}

impl<D: DatabaseCodes> fmt::Debug for SqlxError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(D::NAME)
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl<D: DatabaseCodes> StdError for SqlxError<D> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// Writes the kind of `error`, for any sqlx error but
/// [`sqlx::Error::Database`], whose codes each store names its own way.
fn describe_driver_error(error: &sqlx::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Everything of `error` that could end up in a log: the top-level
/// `Debug` (what the layer prints) and the `Display` of every error along
/// the source chain.
#[cfg(test)]
pub(crate) fn everything_shown(error: &StoreError) -> String {
    let mut shown = format!("{error:?}");
    let mut next: Option<&dyn StdError> = Some(error);
    while let Some(e) = next {
        shown.push('\n');
        shown.push_str(&e.to_string());
        next = e.source();
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose own reports are all backend errors.
    struct Plain;

    impl DatabaseCodes for Plain {
        const NAME: &'static str = "PlainError";

        fn variant(_: &dyn DatabaseError) -> Variant {
            StoreError::Backend
        }

        fn describe(_: &dyn DatabaseError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("database report")
        }
    }

    #[test]
    fn driver_errors_are_unavailable_corrupt_or_backend_errors_by_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for error in [
            sqlx::Error::Io(io),
            sqlx::Error::Tls("handshake".into()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(store_error::<Plain>(error).is_unavailable());
        }
        let decode = sqlx::Error::ColumnDecode {
            index: "data".into(),
            source: "not an object".into(),
        };
        assert!(matches!(
            store_error::<Plain>(decode),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            store_error::<Plain>(sqlx::Error::Decode("bad".into())),
            StoreError::Corrupt(_)
        ));
        let error = store_error::<Plain>(sqlx::Error::RowNotFound);
        assert!(matches!(error, StoreError::Backend(_)));
        let source = StdError::source(&error).expect("the wrapped sqlx error");
        assert!(source.downcast_ref::<SqlxError<Plain>>().is_some());
        assert_eq!(
            format!("{source:?}"),
            "PlainError(no database row returned)"
        );
        let sqlx_error = source.source().expect("the sqlx error is its source");
        assert!(sqlx_error.downcast_ref::<sqlx::Error>().is_some());
    }

    #[test]
    fn driver_errors_are_shown_by_kind_without_the_values_they_quote() {
        let decode = sqlx::Error::ColumnDecode {
            index: "\"data\"".into(),
            source: "invalid type: string \"secret-card-4111\", expected a map".into(),
        };
        let error = store_error::<Plain>(decode);
        assert!(matches!(error, StoreError::Corrupt(_)));
        let shown = everything_shown(&error);
        assert!(
            shown.contains("cannot decode the database column"),
            "{shown}"
        );
        let logged = StdError::source(&error).expect("a source");
        for text in [
            logged.to_string(),
            format!("{logged:?}"),
            format!("{error:?}"),
        ] {
            assert!(!text.contains("secret-card"), "{text}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "secret-card");
        let error = store_error::<Plain>(sqlx::Error::Io(io));
        let logged = StdError::source(&error).expect("a source");
        assert_eq!(logged.to_string(), "database I/O error (ConnectionReset)");
        assert!(!format!("{error:?}").contains("secret-card"));
    }
}
