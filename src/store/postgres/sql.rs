//! The SQL text of every [`PostgresStore`] operation, built once for a
//! store's schema and table.
//!
//! The migration is `schema.sql`, beside this file, with its placeholders
//! replaced; [`PostgresStore`]'s docs show the same file. The other
//! statements are written out below, each with why it is shaped the way it
//! is.

use crate::store::sql_common::sql::{fill_in, quote, INFO_COLUMNS, RECORD_COLUMNS};

/// The migration, with `{table}` for the quoted, schema-qualified table
/// and `{user_id_idx}` and `{expires_at_idx}` for the quoted index names.
pub(super) const SCHEMA: &str = include_str!("schema.sql");

/// The SQL of every operation, built once from the validated names.
pub(super) struct Statements {
    pub(super) qualified_table: String,
    /// The channel the table's trigger announces ended and moved sessions
    /// on.
    pub(super) channel: String,
    /// Whether the table has that trigger (a table migrated by an earlier
    /// version has not).
    pub(super) has_trigger: String,
    pub(super) sweep_batch_size: i64,
    pub(super) migration: String,
    pub(super) create: String,
    pub(super) load: String,
    pub(super) save: String,
    pub(super) retire: String,
    pub(super) restore: String,
    pub(super) delete: String,
    pub(super) delete_user: String,
    pub(super) user_left: String,
    pub(super) delete_all: String,
    pub(super) delete_moved: String,
    pub(super) count_user: String,
    pub(super) list_user: String,
    pub(super) sweep: String,
}

/// The notification channel of `schema.table`: a name of the pair's own
/// that fits PostgreSQL's 63-byte limit however long the names are, and
/// needs no quoting (letters, digits and `_`).
fn channel(schema: &str, table: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{schema}.{table}").as_bytes());
    format!("cloakroom_{}", hex::encode(&digest[..8]))
}

/// The schema used unless another is configured; it needs no
/// `CREATE SCHEMA`.
pub(super) const DEFAULT_SCHEMA: &str = "public";

impl Statements {
    /// The statements for `schema.table`, sweeping `sweep_batch_size` rows
    /// at a time. The names must have been validated.
    pub(super) fn new(schema: &str, table: &str, sweep_batch_size: u32) -> Self {
        let t = format!("{}.{}", quote(schema), quote(table));
        let create_schema = if schema == DEFAULT_SCHEMA {
            String::new()
        } else {
            format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote(schema))
        };
        // `schema.sql` for these names, after the schema it goes in.
        let channel = channel(schema, table);
        let schema_sql = fill_in(SCHEMA, table, &t)
            .replace(
                "{announce_fn}",
                &format!("{}.{}", quote(schema), quote("cloakroom_announce")),
            )
            .replace("{announce_trigger}", &quote(&format!("{table}_announce")))
            .replace("{channel}", &channel);
        let migration = format!("{create_schema}{schema_sql}");

        // $12 is the layer's `now`: only a row that is expired by then (a
        // session, or a forward past its `until`) may be replaced. A live
        // one is left alone and no row is reported. A replaced row takes
        // every column of the new record, the device's too (NULL when the
        // new record has none), so nothing of the old session is kept; a
        // replaced forward becomes a session again: `successor` is cleared.
        // This is the only statement that writes the device.
        let create = format!(
            "INSERT INTO {t} AS existing (key, user_id, data, created_at, last_seen, \
                 absolute_deadline, idle_timeout_secs, persistent, expires_at, \
                 user_agent, client_ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (key) DO UPDATE SET \
                 user_id = EXCLUDED.user_id, data = EXCLUDED.data, \
                 created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, \
                 absolute_deadline = EXCLUDED.absolute_deadline, \
                 idle_timeout_secs = EXCLUDED.idle_timeout_secs, \
                 persistent = EXCLUDED.persistent, expires_at = EXCLUDED.expires_at, \
                 user_agent = EXCLUDED.user_agent, client_ip = EXCLUDED.client_ip, \
                 successor = NULL \
             WHERE existing.expires_at <= $12"
        );

        // All parts of one statement share a snapshot, so the final SELECT
        // returns the row as it was before the touch, as the trait asks.
        // The touch condition is that of `SessionRecord::touch_due`,
        // written against the row being updated (not the snapshot), so a
        // concurrent touch at the same `now` is not repeated: whole seconds
        // elapsed, compared as float8 with `idle * after` exactly as the
        // Rust rule computes it. It holds near the absolute deadline too,
        // where only `last_seen` moves. `successor IS NULL` is checked on
        // the updated row again: a concurrent `retire` may have turned it
        // into a forward, whose `expires_at` (its `until`) a touch must not
        // change.
        let load = format!(
            "WITH live AS ( \
                 SELECT key, {RECORD_COLUMNS} FROM {t} \
                 WHERE key = $1 AND expires_at > $2 AND successor IS NULL \
             ), touched AS ( \
                 UPDATE {t} AS s SET \
                     last_seen = $2, \
                     expires_at = least($2 + s.idle_timeout_secs * interval '1 second', \
                                        s.absolute_deadline) \
                 FROM live \
                 WHERE s.key = live.key \
                   AND s.expires_at > $2 \
                   AND s.successor IS NULL \
                   AND trunc(extract(epoch FROM $2 - s.last_seen))::float8 \
                       >= s.idle_timeout_secs::float8 * $3 \
             ) \
             SELECT {RECORD_COLUMNS} FROM live"
        );

        // Clear, then removals, then insertions, as `SessionRecord::apply`.
        // The right-hand sides read the row as it is when this UPDATE gets
        // its lock, so keys changed by a concurrent save are kept. NULL
        // lifetime parameters keep the stored lifetime. Then the touch rule
        // of `SessionRecord::touch_due`, on the patched lifetime: when due
        // ($9 is the fraction), `last_seen` becomes $8 (`now`), and
        // `expires_at` follows whichever `last_seen` results. The WHERE is
        // checked again on a row a concurrent statement changed, so a
        // session retired or deleted meanwhile is not written.
        let idle = "coalesce($5, idle_timeout_secs)";
        let absolute = "coalesce($6, absolute_deadline)";
        let due =
            format!("(trunc(extract(epoch FROM $8 - last_seen))::float8 >= {idle}::float8 * $9)");
        let last_seen = format!("(CASE WHEN {due} THEN $8 ELSE last_seen END)");
        let save = format!(
            "UPDATE {t} SET \
                 data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE data END - $3::text[]) || $4::jsonb, \
                 idle_timeout_secs = {idle}, \
                 absolute_deadline = {absolute}, \
                 persistent = coalesce($7, persistent), \
                 last_seen = {last_seen}, \
                 expires_at = least({last_seen} + {idle} * interval '1 second', {absolute}) \
             WHERE key = $1 AND expires_at > $8 AND successor IS NULL"
        );

        // $1 key, $2 successor, $3 until, $4 now. One UPDATE covers both
        // the first call (a live session becomes a forward) and a retry (a
        // live forward to the same successor is written back as it is; the
        // CASE keeps its `until`). Two statements, or a CTE with a separate
        // SELECT for the retry, would answer `false` to a retry that waited
        // on the first attempt's row lock, since both parts would read the
        // snapshot from before the first attempt committed; a single
        // UPDATE re-checks its WHERE on the row the first attempt wrote. A
        // forward keeps nothing of the session that a dump could show: no
        // user, data or device.
        let retire = format!(
            "UPDATE {t} SET \
                 successor = $2, user_id = NULL, data = '{{}}'::jsonb, \
                 user_agent = NULL, client_ip = NULL, \
                 expires_at = CASE WHEN successor IS NULL THEN $3 ELSE expires_at END \
             WHERE key = $1 AND expires_at > $4 AND (successor IS NULL OR successor = $2)"
        );

        // $1 key, $2 successor, $3..$12 the record as `create` binds
        // its $2..$11, $13 now. Only a live forward to that successor
        // becomes the record again.
        let restore = format!(
            "UPDATE {t} SET \
                 user_id = $3, data = $4, created_at = $5, last_seen = $6, \
                 absolute_deadline = $7, idle_timeout_secs = $8, persistent = $9, \
                 expires_at = $10, user_agent = $11, client_ip = $12, successor = NULL \
             WHERE key = $1 AND successor = $2 AND expires_at > $13"
        );

        // What the removed row was is decided with the layer's `now`; the
        // comparison is done here rather than by decoding `expires_at`, so
        // a row with a timestamp Rust cannot hold is still deleted cleanly.
        // A live forward is kept (a retried logout follows it again): the
        // second SELECT reports it, reading the row as it was before this
        // statement, like the DELETE beside it. `$3` is the user the
        // session must belong to (`delete_owned`), or NULL (`delete`): a
        // live row of anyone else (`user_id = $3` is then false or NULL)
        // is neither deleted nor reported, as if there were none. Forwards
        // have no `user_id`; the live ones are reported all the same.
        let delete = format!(
            "WITH gone AS ( \
                 DELETE FROM {t} \
                 WHERE key = $1 AND NOT (successor IS NOT NULL AND expires_at > $2) \
                     AND ($3::text IS NULL OR expires_at <= $2 OR user_id = $3) \
                 RETURNING successor, expires_at > $2 AS live) \
             SELECT successor, live FROM gone \
             UNION ALL \
             SELECT successor, true AS live FROM {t} \
             WHERE key = $1 AND successor IS NOT NULL AND expires_at > $2"
        );
        // Forwards have no `user_id`, so these never touch them.
        let delete_user = format!("DELETE FROM {t} WHERE user_id = $1 AND key IS DISTINCT FROM $2");
        let user_left = format!(
            "SELECT EXISTS (SELECT FROM {t} WHERE user_id = $1 AND key IS DISTINCT FROM $2)"
        );
        // One batch of `delete_all`: $1 created until, $2 the batch size,
        // $3 now. Forwards (whatever their age) and sessions created up to
        // the cutoff, `$2` at a time, so that no statement holds row locks
        // on more than a batch. `picked` is how many rows the batch found
        // in its snapshot: fewer than `$2` means none was left, even when a
        // concurrent logout deleted some of them first (the DELETE then
        // removes fewer, which must not end the pass early). `ended`
        // counts only the session rows live at $3; `moved` are the
        // successors of the forwards live at $3, which `delete_moved`
        // takes next. A row that a concurrent `retire` turned into a
        // forward while the DELETE waited for it is deleted as it is then,
        // a forward, and its successor (committed before the retire, so
        // visible to the next statement) is in `moved`.
        let delete_all = format!(
            "WITH picked AS ( \
                 SELECT key FROM {t} WHERE successor IS NOT NULL OR created_at <= $1 LIMIT $2 \
             ), gone AS ( \
                 DELETE FROM {t} WHERE key IN (SELECT key FROM picked) \
                 RETURNING successor, expires_at > $3 AS live) \
             SELECT (SELECT count(*) FROM picked) AS picked, \
                    (SELECT count(*) FROM gone WHERE live AND successor IS NULL) AS ended, \
                    ARRAY(SELECT successor FROM gone WHERE live AND successor IS NOT NULL) \
                        AS moved"
        );
        // The rows that live forwards deleted by `delete_all` led to ($1),
        // by the same rule: a session created up to $2, or a forward.
        let delete_moved = format!(
            "WITH gone AS ( \
                 DELETE FROM {t} \
                 WHERE key = ANY($1) AND (successor IS NOT NULL OR created_at <= $2) \
                 RETURNING successor, expires_at > $3 AS live) \
             SELECT (SELECT count(*) FROM gone WHERE live AND successor IS NULL) AS ended, \
                    ARRAY(SELECT successor FROM gone WHERE live AND successor IS NOT NULL) \
                        AS moved"
        );
        let count_user = format!("SELECT count(*) FROM {t} WHERE user_id = $1 AND expires_at > $2");
        // Newest first, so LIMIT keeps the most recently created ones; the
        // caller reverses them to oldest first.
        let list_user = format!(
            "SELECT {INFO_COLUMNS} FROM {t} \
             WHERE user_id = $1 AND expires_at > $2 \
             ORDER BY created_at DESC, key DESC LIMIT $3"
        );
        // SKIP LOCKED: rows another transaction is busy with (a create
        // replacing an expired row, another sweeper) are left for later
        // instead of waited for. Lapsed forwards are expired rows too.
        let sweep = format!(
            "DELETE FROM {t} WHERE key IN ( \
                 SELECT key FROM {t} WHERE expires_at <= $1 \
                 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        );

        let has_trigger = format!(
            "SELECT EXISTS (SELECT FROM pg_trigger \
             WHERE tgrelid = to_regclass('{t}') AND tgname = '{table}_announce')"
        );
        Self {
            qualified_table: t,
            channel,
            has_trigger,
            sweep_batch_size: i64::from(sweep_batch_size),
            migration,
            create,
            load,
            save,
            retire,
            restore,
            delete,
            delete_user,
            user_left,
            delete_all,
            delete_moved,
            count_user,
            list_user,
            sweep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql_common::builder::MAX_TABLE_LEN;
    use crate::store::sql_common::sql::{DEFAULT_TABLE, EXPIRES_AT_INDEX, TABLE, USER_ID_INDEX};

    #[test]
    fn the_longest_table_name_keeps_index_names_within_the_identifier_limit() {
        let table = "t".repeat(MAX_TABLE_LEN);
        let sql = Statements::new("s", &table, 1).migration;
        for index in ["_user_id_idx", "_expires_at_idx"] {
            let name = format!("{table}{index}");
            assert!(name.len() <= 63, "{name} would be truncated");
            assert!(sql.contains(&quote(&name)));
        }
    }

    #[test]
    fn the_migration_for_the_default_names_is_the_schema_file_filled_in() {
        let sql = Statements::new(DEFAULT_SCHEMA, DEFAULT_TABLE, 1).migration;
        // Written out here rather than through `quote`, so that a mistake
        // there shows.
        let expected = SCHEMA
            .replace("{table}", r#""public"."cloakroom_sessions""#)
            .replace("{user_id_idx}", r#""cloakroom_sessions_user_id_idx""#)
            .replace("{expires_at_idx}", r#""cloakroom_sessions_expires_at_idx""#)
            .replace("{announce_fn}", r#""public"."cloakroom_announce""#)
            .replace("{announce_trigger}", r#""cloakroom_sessions_announce""#)
            .replace("{channel}", "cloakroom_5f4f6c9df52236c3");
        assert_eq!(sql, expected);
        assert!(
            !sql.contains(['{', '}']),
            "a placeholder was left in:\n{sql}"
        );
        // Every placeholder is used, and the table in every statement.
        for placeholder in [TABLE, USER_ID_INDEX, EXPIRES_AT_INDEX] {
            assert!(SCHEMA.contains(placeholder), "{placeholder}");
        }
        // CREATE TABLE, two indexes, the trigger.
        assert_eq!(sql.matches(r#""public"."cloakroom_sessions""#).count(), 4);
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"public\".\"cloakroom_sessions\" (\n"));
    }

    #[test]
    fn a_schema_other_than_public_is_created_by_the_migration() {
        let sql = Statements::new("auth", "sessions", 1).migration;
        assert!(sql.starts_with("CREATE SCHEMA IF NOT EXISTS \"auth\";\n"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"auth\".\"sessions\" ("));
        assert!(!Statements::new("public", "sessions", 1)
            .migration
            .contains("CREATE SCHEMA"));
    }

    #[test]
    fn every_statement_uses_the_quoted_qualified_table() {
        let s = Statements::new("auth", "order", 7);
        for sql in [
            &s.create,
            &s.load,
            &s.save,
            &s.retire,
            &s.restore,
            &s.delete,
            &s.delete_user,
            &s.user_left,
            &s.delete_all,
            &s.delete_moved,
            &s.count_user,
            &s.list_user,
            &s.sweep,
        ] {
            assert!(sql.contains("\"auth\".\"order\""), "{sql}");
        }
        assert_eq!(s.sweep_batch_size, 7);
    }
}
