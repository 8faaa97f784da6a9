//! How sqlx errors become [`StoreError`]s, shown without the data that
//! server reports can quote.
//!
//! The mapping is described under "Errors" on
//! [`PostgresStore`](super::PostgresStore).

use std::error::Error as StdError;
use std::fmt;

use crate::store::sqlx_error::describe_driver_error;
use crate::store::StoreError;

/// Maps a sqlx error to the store error kind the layer needs. The source
/// is the sqlx error wrapped in [`PostgresError`], which the layer may log.
pub(super) fn store_error(error: sqlx::Error) -> StoreError {
    let sqlstate = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(std::borrow::Cow::into_owned);
    let unavailable = matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    );
    let corrupt = matches!(
        error,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)
    );
    let wrapped = PostgresError(error);
    match sqlstate.as_deref() {
        _ if unavailable => StoreError::unavailable(wrapped),
        Some(code) if means_unavailable(code) => StoreError::unavailable(wrapped),
        Some(code) if means_rejected(code) => StoreError::rejected(wrapped),
        _ if corrupt => StoreError::corrupt(wrapped),
        _ => StoreError::backend(wrapped),
    }
}

/// Whether a server error's SQLSTATE says "not serving right now" rather
/// than "this statement is wrong".
fn means_unavailable(sqlstate: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many
    // connections, out of memory, disk full); 57P: shutdown in progress,
    // crash recovery, cannot connect now.
    sqlstate.starts_with("08") || sqlstate.starts_with("53") || sqlstate.starts_with("57P")
        // statement_timeout, lock_timeout: the server did not answer in time.
        || sqlstate == "57014"
        || sqlstate == "55P03"
}

/// Whether a server error's SQLSTATE says "this value cannot be stored":
/// class 22, data exception. What the store sends is the layer's data
/// (user IDs, data keys and values) and times it chose, so such an error
/// is about a value the client gave: 22P05 (untranslatable character) and
/// 22021 (character not in repertoire) are what a NUL in `jsonb` and in
/// `text` give, 22008 a time beyond PostgreSQL's range. (A row edited by
/// hand into values that overflow the statements' own arithmetic would
/// give class 22 too; that is not worth telling apart.)
fn means_rejected(sqlstate: &str) -> bool {
    sqlstate.starts_with("22")
}

/// A sqlx error, shown without anything the server or the driver quoted.
///
/// PostgreSQL's error reports can quote the statement's parameters: a NUL
/// in a `jsonb` value comes back with `where: JSON data, line 1:
/// {"note":"...` and the session data up to it, and sqlx's `Debug` prints
/// that; decode errors quote the value they could not decode. The layer
/// logs the source of a [`StoreError`], so this type's `Display` and
/// `Debug` show only the kind of failure, and for a server error its
/// SQLSTATE and the SQLSTATE's class. The sqlx error stays reachable as
/// this error's own source, for code that asks for it on purpose.
struct PostgresError(sqlx::Error);

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            sqlx::Error::Database(db) => match db.code() {
                // A SQLSTATE is five digits or upper-case letters; a code
                // that is not is not shown, since it would not be one.
                Some(code) if is_sqlstate(&code) => {
                    write!(f, "database error {code} ({})", sqlstate_class(&code))
                }
                _ => f.write_str("database error without a SQLSTATE"),
            },
            other => describe_driver_error(other, f),
        }
    }
}

impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresError")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl StdError for PostgresError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn is_sqlstate(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// The name of a SQLSTATE's class (its first two characters), as listed in
/// PostgreSQL's documentation (appendix A, "PostgreSQL Error Codes").
fn sqlstate_class(code: &str) -> &'static str {
    match code.get(..2).unwrap_or_default() {
        "00" => "successful completion",
        "01" => "warning",
        "02" => "no data",
        "03" => "SQL statement not yet complete",
        "08" => "connection exception",
        "09" => "triggered action exception",
        "0A" => "feature not supported",
        "0B" => "invalid transaction initiation",
        "0F" => "locator exception",
        "0L" => "invalid grantor",
        "0P" => "invalid role specification",
        "0Z" => "diagnostics exception",
        "20" => "case not found",
        "21" => "cardinality violation",
        "22" => "data exception",
        "23" => "integrity constraint violation",
        "24" => "invalid cursor state",
        "25" => "invalid transaction state",
        "26" => "invalid SQL statement name",
        "27" => "triggered data change violation",
        "28" => "invalid authorization specification",
        "2B" => "dependent privilege descriptors still exist",
        "2D" => "invalid transaction termination",
        "2F" => "SQL routine exception",
        "34" => "invalid cursor name",
        "38" => "external routine exception",
        "39" => "external routine invocation exception",
        "3B" => "savepoint exception",
        "3D" => "invalid catalog name",
        "3F" => "invalid schema name",
        "40" => "transaction rollback",
        "42" => "syntax error or access rule violation",
        "44" => "WITH CHECK OPTION violation",
        "53" => "insufficient resources",
        "54" => "program limit exceeded",
        "55" => "object not in prerequisite state",
        "57" => "operator intervention",
        "58" => "system error",
        "72" => "snapshot failure",
        "F0" => "configuration file error",
        "HV" => "foreign data wrapper error",
        "P0" => "PL/pgSQL error",
        "XX" => "internal error",
        _ => "unknown class",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for error in [
            sqlx::Error::Io(io),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(matches!(store_error(error), StoreError::Unavailable(_)));
        }
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "55P03",
        ] {
            assert!(means_unavailable(code), "{code}");
        }
        for code in ["42P01", "23505", "22P02", "40001", "42501"] {
            assert!(!means_unavailable(code), "{code}");
        }
    }

    #[test]
    fn undecodable_values_are_corrupt_and_other_errors_are_backend_errors() {
        let decode = sqlx::Error::ColumnDecode {
            index: "data".into(),
            source: "not an object".into(),
        };
        assert!(matches!(store_error(decode), StoreError::Corrupt(_)));
        assert!(matches!(
            store_error(sqlx::Error::Decode("bad".into())),
            StoreError::Corrupt(_)
        ));
        let error = store_error(sqlx::Error::RowNotFound);
        assert!(matches!(error, StoreError::Backend(_)));
        let source = StdError::source(&error).expect("the wrapped sqlx error");
        assert!(source.downcast_ref::<PostgresError>().is_some());
        let sqlx_error = source.source().expect("the sqlx error is its source");
        assert!(sqlx_error.downcast_ref::<sqlx::Error>().is_some());
    }

    /// A server error shaped like PostgreSQL's report of a NUL in `jsonb`:
    /// a plain message, and a context (`where`) that quotes the data sent,
    /// which sqlx's `Debug` prints.
    struct ServerError {
        code: &'static str,
        context: &'static str,
    }

    impl fmt::Debug for ServerError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerError")
                .field("code", &self.code)
                .field("where", &self.context)
                .finish()
        }
    }

    impl fmt::Display for ServerError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(sqlx::error::DatabaseError::message(self))
        }
    }

    impl StdError for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "unsupported Unicode escape sequence"
        }

        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }

        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    const SECRET: &str = r#"JSON data, line 1: {"note":"secret-card-4111"#;

    fn server_error(code: &'static str) -> StoreError {
        store_error(sqlx::Error::from(ServerError {
            code,
            context: SECRET,
        }))
    }

    /// Every `Display` along the source chain, and the top-level `Debug`.
    fn everything_shown(error: &StoreError) -> String {
        let mut shown = format!("{error:?}");
        let mut next: Option<&dyn StdError> = Some(error);
        while let Some(e) = next {
            shown.push('\n');
            shown.push_str(&e.to_string());
            next = e.source();
        }
        shown
    }

    #[test]
    fn data_exceptions_are_rejected_and_other_server_errors_keep_their_kind() {
        for code in ["22P05", "22021", "22008", "22001"] {
            assert!(
                matches!(server_error(code), StoreError::Rejected(_)),
                "{code}"
            );
        }
        for code in ["08006", "57P01", "57014", "55P03", "53300"] {
            assert!(
                matches!(server_error(code), StoreError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["42P01", "23505", "40001", "XX000"] {
            assert!(
                matches!(server_error(code), StoreError::Backend(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn the_logged_error_shows_the_sqlstate_and_class_but_no_quoted_data() {
        let error = server_error("22P05");
        assert!(error.is_rejected());
        let source = StdError::source(&error).expect("a source");
        assert_eq!(source.to_string(), "database error 22P05 (data exception)");
        assert_eq!(
            format!("{source:?}"),
            "PostgresError(database error 22P05 (data exception))"
        );
        assert!(
            format!("{error:?}").contains("22P05"),
            "the top-level Debug names the SQLSTATE"
        );
        let shown = everything_shown(&error);
        assert!(!shown.contains("secret-card"), "{shown}");
        // The full report is still there for code that asks on purpose.
        let sqlx_error = source
            .source()
            .and_then(|e| e.downcast_ref::<sqlx::Error>())
            .expect("the sqlx error");
        assert!(format!("{sqlx_error:?}").contains("secret-card"));
    }

    #[test]
    fn driver_errors_are_shown_by_kind_without_the_values_they_quote() {
        let decode = sqlx::Error::ColumnDecode {
            index: "\"data\"".into(),
            source: "invalid type: string \"secret-card-4111\", expected a map".into(),
        };
        let error = store_error(decode);
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
        let error = store_error(sqlx::Error::Io(io));
        let logged = StdError::source(&error).expect("a source");
        assert_eq!(logged.to_string(), "database I/O error (ConnectionReset)");
        assert!(!format!("{error:?}").contains("secret-card"));
    }

    #[test]
    fn only_well_formed_sqlstates_are_shown() {
        let error = server_error("2\"sec");
        let source = StdError::source(&error).expect("a source");
        assert_eq!(source.to_string(), "database error without a SQLSTATE");
        assert!(matches!(error, StoreError::Backend(_)));
        assert_eq!(sqlstate_class("XX000"), "internal error");
        assert_eq!(sqlstate_class("0A000"), "feature not supported");
        assert_eq!(sqlstate_class("ZZ999"), "unknown class");
        assert!(is_sqlstate("22P05") && !is_sqlstate("22p05") && !is_sqlstate("2200"));
    }
}
