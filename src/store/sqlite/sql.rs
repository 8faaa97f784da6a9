//! The SQL text of every [`SqliteStore`](super::SqliteStore) operation,
//! built once for a store's table (the `save` statement's data expression
//! depends on how many keys a patch names, and is built per call from the
//! counts alone).
//!
//! The migration is `schema.sql`, beside this file, with its placeholders
//! replaced; [`SqliteStore`](super::SqliteStore)'s docs show the same file.

use std::fmt::Write as _;

use crate::store::sql_common::sql::{fill_in, quote, INFO_COLUMNS, RECORD_COLUMNS};

/// The migration, with `{table}` for the quoted table and `{user_id_idx}`
/// and `{expires_at_idx}` for the quoted index names.
pub(super) const SCHEMA: &str = include_str!("schema.sql");

/// Paths per `json_remove` call and path/value pairs per `json_set` call:
/// SQLite refuses functions with more than 127 arguments by default, so a
/// patch naming more keys nests several calls.
const REMOVALS_PER_CALL: usize = 100;
const SETS_PER_CALL: usize = 50;

/// The parameter the first removal path is bound to in `save`: `?1` to
/// `?7` are fixed (see [`Statements::save`]).
pub(super) const FIRST_PATCH_PARAMETER: usize = 8;

/// The SQL of every operation, built once from the validated names.
pub(super) struct Statements {
    pub(super) quoted_table: String,
    pub(super) sweep_batch_size: i64,
    pub(super) migration: String,
    pub(super) create: String,
    pub(super) load: String,
    pub(super) touch: String,
    /// `save` up to its data expression, which [`Statements::save`] adds.
    save_head: String,
    save_tail: String,
    pub(super) retire: String,
    pub(super) restore: String,
    pub(super) delete: String,
    pub(super) live_forward: String,
    pub(super) delete_user: String,
    pub(super) delete_all: String,
    pub(super) count_user: String,
    pub(super) list_user: String,
    pub(super) sweep: String,
}

impl Statements {
    /// The statements for `table`, sweeping `sweep_batch_size` rows at a
    /// time. The name must have been validated.
    pub(super) fn new(table: &str, sweep_batch_size: u32) -> Self {
        let t = quote(table);
        let migration = fill_in(SCHEMA, table, &t);

        // ?12 is the layer's `now`: only a row expired by then (a session,
        // or a forward past its `until`) may be replaced, and then every
        // column is replaced, the device's too, and `successor` cleared. A
        // live row is left alone and the statement changes no row. This is
        // the only statement that writes the device.
        let create = format!(
            "INSERT INTO {t} (key, user_id, data, created_at, last_seen, \
                 absolute_deadline, idle_timeout_secs, persistent, expires_at, \
                 user_agent, client_ip, successor) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL) \
             ON CONFLICT (key) DO UPDATE SET \
                 user_id = excluded.user_id, data = excluded.data, \
                 created_at = excluded.created_at, last_seen = excluded.last_seen, \
                 absolute_deadline = excluded.absolute_deadline, \
                 idle_timeout_secs = excluded.idle_timeout_secs, \
                 persistent = excluded.persistent, expires_at = excluded.expires_at, \
                 user_agent = excluded.user_agent, client_ip = excluded.client_ip, \
                 successor = NULL \
             WHERE {t}.expires_at <= ?12"
        );

        // A plain read: in WAL mode it waits for no writer and takes no
        // lock that writers wait for.
        let load = format!(
            "SELECT {RECORD_COLUMNS} FROM {t} \
             WHERE key = ?1 AND expires_at > ?2 AND successor IS NULL"
        );
        // The touch, run only when the row `load` read was due for one. Its
        // WHERE is the rule of `SessionRecord::touch_due` (whole seconds,
        // compared as doubles with `idle * after`, exactly as the Rust rule
        // computes it), checked again on the row as it is now, under the
        // write lock: a touch by a concurrent request at the same `now` is
        // not repeated, a session deleted or retired meanwhile is not
        // written, and a lifetime a concurrent save changed is the one
        // `expires_at` follows.
        let touch = format!(
            "UPDATE {t} SET \
                 last_seen = ?2, \
                 expires_at = min(?2 + idle_timeout_secs, absolute_deadline) \
             WHERE key = ?1 AND expires_at > ?2 AND successor IS NULL \
               AND CAST(?2 - last_seen AS REAL) >= CAST(idle_timeout_secs AS REAL) * ?3"
        );

        // ?1 key, ?2 clear, ?3 idle timeout, ?4 absolute deadline, ?5
        // persistent (NULLs keep the stored lifetime), ?6 now, ?7 the touch
        // fraction; the data expression's paths and values follow. Every
        // right-hand side reads the row as it was before this UPDATE (and
        // SQLite runs one writer at a time, so as the last write left it):
        // keys changed by a concurrent save are kept. Then the touch rule
        // on the patched lifetime, as `SessionRecord::touch_due`.
        let idle = "coalesce(?3, idle_timeout_secs)";
        let absolute = "coalesce(?4, absolute_deadline)";
        let due = format!("(CAST(?6 - last_seen AS REAL) >= CAST({idle} AS REAL) * ?7)");
        let last_seen = format!("(CASE WHEN {due} THEN ?6 ELSE last_seen END)");
        let save_head = format!("UPDATE {t} SET data = ");
        let save_tail = format!(
            ", idle_timeout_secs = {idle}, \
               absolute_deadline = {absolute}, \
               persistent = coalesce(?5, persistent), \
               last_seen = {last_seen}, \
               expires_at = min({last_seen} + {idle}, {absolute}) \
             WHERE key = ?1 AND expires_at > ?6 AND successor IS NULL"
        );

        // ?1 key, ?2 successor, ?3 until, ?4 now. A live session becomes a
        // forward; a live forward to the same successor (a retry) is
        // written back as it is. A forward keeps nothing of the session a
        // dump could show: no user, data or device.
        let retire = format!(
            "UPDATE {t} SET \
                 successor = ?2, user_id = NULL, data = '{{}}', \
                 user_agent = NULL, client_ip = NULL, \
                 expires_at = CASE WHEN successor IS NULL THEN ?3 ELSE expires_at END \
             WHERE key = ?1 AND expires_at > ?4 AND (successor IS NULL OR successor = ?2)"
        );

        // ?1 key, ?2 successor, ?3..?12 the record as `create` binds
        // its ?2..?11, ?13 now. Only a live forward to that successor
        // becomes the record again.
        let restore = format!(
            "UPDATE {t} SET \
                 user_id = ?3, data = ?4, created_at = ?5, last_seen = ?6, \
                 absolute_deadline = ?7, idle_timeout_secs = ?8, persistent = ?9, \
                 expires_at = ?10, user_agent = ?11, client_ip = ?12, successor = NULL \
             WHERE key = ?1 AND successor = ?2 AND expires_at > ?13"
        );

        // Anything but a live forward is deleted, and says whether it was a
        // live session. A live forward is kept (a retried logout follows it
        // again), and reported by `live_forward`. `?3` is the user the
        // session must belong to (`delete_owned`), or NULL (`delete`): a
        // live row of anyone else (`user_id = ?3` is then false or NULL)
        // is left as it is.
        let delete = format!(
            "DELETE FROM {t} \
             WHERE key = ?1 AND NOT (successor IS NOT NULL AND expires_at > ?2) \
                 AND (?3 IS NULL OR expires_at <= ?2 OR user_id = ?3) \
             RETURNING successor IS NULL AND expires_at > ?2 AS live"
        );
        let live_forward = format!(
            "SELECT successor FROM {t} \
             WHERE key = ?1 AND successor IS NOT NULL AND expires_at > ?2"
        );
        // Forwards have no `user_id`, so these never touch them.
        let delete_user = format!("DELETE FROM {t} WHERE user_id = ?1 AND key IS NOT ?2");
        // One batch of `delete_all`: ?1 created until, ?2 the batch size, ?3
        // now. Forwards (whatever their age) and sessions created up to the
        // cutoff, `?2` at a time, so that no statement holds the write lock
        // for long; each deleted row says whether it was a session live at
        // ?3, the only ones counted.
        let delete_all = format!(
            "DELETE FROM {t} WHERE key IN ( \
                 SELECT key FROM {t} WHERE successor IS NOT NULL OR created_at <= ?1 LIMIT ?2) \
             RETURNING successor IS NULL AND expires_at > ?3 AS live"
        );
        let count_user = format!("SELECT count(*) FROM {t} WHERE user_id = ?1 AND expires_at > ?2");
        // Newest first, so LIMIT keeps the most recently created ones; the
        // caller reverses them to oldest first.
        let list_user = format!(
            "SELECT {INFO_COLUMNS} FROM {t} \
             WHERE user_id = ?1 AND expires_at > ?2 \
             ORDER BY created_at DESC, key DESC LIMIT ?3"
        );
        // Through the `expires_at` index, a batch at a time, so that no
        // statement holds the write lock for long.
        let sweep = format!(
            "DELETE FROM {t} WHERE key IN ( \
                 SELECT key FROM {t} WHERE expires_at <= ?1 LIMIT ?2)"
        );

        Self {
            quoted_table: t,
            sweep_batch_size: i64::from(sweep_batch_size),
            migration,
            create,
            load,
            touch,
            save_head,
            save_tail,
            retire,
            restore,
            delete,
            live_forward,
            delete_user,
            delete_all,
            count_user,
            list_user,
            sweep,
        }
    }

    /// The `save` statement for a patch that removes `removals` keys and
    /// sets `sets` keys: the same text for the same counts, so SQLite's
    /// prepared statements are reused. The removal paths are bound from
    /// `?8` on, then a path and a JSON value for each key set.
    pub(super) fn save(&self, removals: usize, sets: usize) -> String {
        let mut data = String::from("(CASE WHEN ?2 THEN '{}' ELSE data END)");
        let mut next = FIRST_PATCH_PARAMETER;
        for chunk in chunks(removals, REMOVALS_PER_CALL) {
            let mut call = format!("json_remove({data}");
            for _ in 0..chunk {
                let _ = write!(call, ", ?{next}");
                next += 1;
            }
            call.push(')');
            data = call;
        }
        for chunk in chunks(sets, SETS_PER_CALL) {
            let mut call = format!("json_set({data}");
            for _ in 0..chunk {
                let _ = write!(call, ", ?{}, json(?{})", next, next + 1);
                next += 2;
            }
            call.push(')');
            data = call;
        }
        format!("{}{data}{}", self.save_head, self.save_tail)
    }
}

/// `total` split into runs of at most `size`.
fn chunks(total: usize, size: usize) -> impl Iterator<Item = usize> {
    (0..total.div_ceil(size)).map(move |i| (total - i * size).min(size))
}

/// The SQLite JSON path of the top-level object member `key`.
///
/// SQLite reads a quoted path label up to the next `"`, with no way to
/// escape one; but a label holding a backslash is compared with JSON
/// escapes decoded on both sides. So every `"` and `\` and every control
/// character is written as a JSON escape (`"` as `\u0022`), and any key,
/// whatever it holds, names exactly itself.
pub(super) fn member_path(key: &str) -> String {
    let mut path = String::with_capacity(key.len() + 4);
    path.push_str("$.\"");
    for c in key.chars() {
        match c {
            '"' => path.push_str("\\u0022"),
            '\\' => path.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(path, "\\u{:04x}", u32::from(c));
            }
            c => path.push(c),
        }
    }
    path.push('"');
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql_common::sql::{DEFAULT_TABLE, EXPIRES_AT_INDEX, TABLE, USER_ID_INDEX};

    #[test]
    fn the_migration_for_the_default_table_is_the_schema_file_filled_in() {
        let sql = Statements::new(DEFAULT_TABLE, 1).migration;
        let expected = SCHEMA
            .replace("{table}", r#""cloakroom_sessions""#)
            .replace("{user_id_idx}", r#""cloakroom_sessions_user_id_idx""#)
            .replace("{expires_at_idx}", r#""cloakroom_sessions_expires_at_idx""#);
        assert_eq!(sql, expected);
        assert!(!sql.contains("{table}") && !sql.contains("_idx}"), "{sql}");
        for placeholder in [TABLE, USER_ID_INDEX, EXPIRES_AT_INDEX] {
            assert!(SCHEMA.contains(placeholder), "{placeholder}");
        }
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"cloakroom_sessions\" (\n"));
    }

    #[test]
    fn every_statement_uses_the_quoted_table() {
        let s = Statements::new("order", 7);
        for sql in [
            &s.create,
            &s.load,
            &s.touch,
            &s.save(0, 0),
            &s.retire,
            &s.restore,
            &s.delete,
            &s.live_forward,
            &s.delete_user,
            &s.delete_all,
            &s.count_user,
            &s.list_user,
            &s.sweep,
        ] {
            assert!(sql.contains("\"order\""), "{sql}");
        }
        assert_eq!(s.sweep_batch_size, 7);
    }

    #[test]
    fn save_numbers_its_patch_parameters_and_nests_long_patches() {
        let s = Statements::new("t", 1);
        let sql = s.save(1, 1);
        assert!(
            sql.contains(
                "json_set(json_remove((CASE WHEN ?2 THEN '{}' ELSE data END), ?8), ?9, json(?10))"
            ),
            "{sql}"
        );
        let sql = s.save(0, 0);
        assert!(
            sql.starts_with("UPDATE \"t\" SET data = (CASE WHEN ?2"),
            "{sql}"
        );
        // 250 removals and 120 sets: three removal calls, three set calls,
        // each within SQLite's 127 arguments, and every parameter once.
        let sql = s.save(250, 120);
        assert_eq!(sql.matches("json_remove(").count(), 3);
        assert_eq!(sql.matches("json_set(").count(), 3);
        let last = FIRST_PATCH_PARAMETER + 250 + 2 * 120 - 1;
        assert!(sql.contains(&format!("?{last})")), "{sql}");
        assert!(!sql.contains(&format!("?{}", last + 1)));
        assert_eq!(chunks(250, 100).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(chunks(0, 100).count(), 0);
    }

    #[test]
    fn member_paths_escape_what_sqlite_cannot_read_raw() {
        assert_eq!(member_path("a"), r#"$."a""#);
        assert_eq!(member_path(""), r#"$."""#);
        assert_eq!(member_path("a.b[0]"), r#"$."a.b[0]""#);
        assert_eq!(member_path("q\"\\\n"), r#"$."q\u0022\\\u000a""#);
        assert_eq!(member_path("ключ ✓"), "$.\"ключ ✓\"");
    }
}
