//! What the statements of both SQL stores share: the default table,
//! quoting, the placeholders of each store's `schema.sql`, and the column
//! lists that `row` decodes. The statements themselves are each store's
//! own (`sql.rs` beside its `mod.rs`): the dialects differ in placeholders,
//! JSON operators and locking.

/// The table used unless another is configured.
pub(crate) const DEFAULT_TABLE: &str = "cloakroom_sessions";

/// The placeholders of a store's `schema.sql`: the quoted table (for
/// PostgreSQL, schema-qualified) and the quoted index names.
pub(crate) const TABLE: &str = "{table}";
pub(crate) const USER_ID_INDEX: &str = "{user_id_idx}";
pub(crate) const EXPIRES_AT_INDEX: &str = "{expires_at_idx}";

/// The columns of a full record, as `row::record_from_row` reads them.
pub(crate) const RECORD_COLUMNS: &str = "user_id, data, created_at, last_seen, \
     absolute_deadline, idle_timeout_secs, persistent, user_agent, client_ip";

/// The columns of a listed session, as `row::sessions_oldest_first` reads
/// them.
pub(crate) const INFO_COLUMNS: &str =
    "key, created_at, last_seen, expires_at, persistent, user_agent, client_ip";

/// Quotes an identifier. The names were validated, so they hold no `"` to
/// escape; quoting still matters, for names that are reserved words.
pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// `schema` (a store's `schema.sql`) with its placeholders filled in, by
/// plain replacement, for the validated `table` (`quoted_table` as the
/// statements name it). The index names are derived from `table`:
/// `<table>_user_id_idx` and `<table>_expires_at_idx`.
pub(crate) fn fill_in(schema: &str, table: &str, quoted_table: &str) -> String {
    schema
        .replace(TABLE, quoted_table)
        .replace(USER_ID_INDEX, &quote(&format!("{table}_user_id_idx")))
        .replace(EXPIRES_AT_INDEX, &quote(&format!("{table}_expires_at_idx")))
}
