//! How sqlx errors become [`StoreError`]s, shown without the data that
//! server reports can quote.
//!
//! The mapping is described under "Errors" on
//! [`PostgresStore`](super::PostgresStore).

use std::fmt;

use sqlx::error::DatabaseError;

use crate::store::sql_common::error::{DatabaseCodes, Variant};
use crate::store::StoreError;

/// Maps a sqlx error to the store error kind the layer needs (see
/// `sql_common::error`). The source, which the layer may log, shows
/// a server report by its SQLSTATE and the SQLSTATE's class only.
pub(super) fn store_error(error: sqlx::Error) -> StoreError {
    crate::store::sql_common::error::store_error::<sqlx::Postgres>(error)
}

/// PostgreSQL's error reports can quote the statement's parameters: a NUL
/// in a `jsonb` value comes back with `where: JSON data, line 1:
/// {"note":"...` and the session data up to it, and sqlx's `Debug` prints
/// that. So a report is shown by its SQLSTATE and the SQLSTATE's class
/// only.
impl DatabaseCodes for sqlx::Postgres {
    const NAME: &'static str = "PostgresError";

    fn variant(report: &dyn DatabaseError) -> Variant {
        match report.code().as_deref() {
            Some(code) if means_unavailable(code) => StoreError::Unavailable,
            Some(code) if means_rejected(code) => StoreError::Rejected,
            _ => StoreError::Backend,
        }
    }

    fn describe(report: &dyn DatabaseError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match report.code() {
            // A SQLSTATE is five digits or upper-case letters; a code
            // that is not is not shown, since it would not be one.
            Some(code) if is_sqlstate(&code) => {
                write!(f, "database error {code} ({})", sqlstate_class(&code))
            }
            _ => f.write_str("database error without a SQLSTATE"),
        }
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
    use std::error::Error as StdError;

    use super::*;
    use crate::store::sql_common::error::everything_shown;

    type PostgresError = crate::store::sql_common::error::SqlxError<sqlx::Postgres>;

    #[test]
    fn connection_trouble_is_unavailable() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "55P03",
        ] {
            assert!(means_unavailable(code), "{code}");
        }
        for code in ["42P01", "23505", "22P02", "40001", "42501"] {
            assert!(!means_unavailable(code), "{code}");
        }
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
        assert!(source.downcast_ref::<PostgresError>().is_some());
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
