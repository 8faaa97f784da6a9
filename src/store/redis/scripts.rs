//! The Lua scripts the store runs in Redis, one `.lua` file each beside
//! this one.
//!
//! Each script touches exactly one key (`KEYS[1]`), so Redis Cluster needs
//! no hash tags. Times are Unix seconds from the layer's clock, passed in
//! `ARGV`; no script reads Redis time. The scripts that need the shared
//! helpers of `helpers.lua` (`batched`, `deadline`, `changed`) get it put
//! in front of their own text when they are first used; the others are
//! their file alone.
//!
//! Every script that changes or ends a session calls `changed`, which
//! publishes the session's store key (hex) on `<prefix>changed`: that is
//! how a [`RedisStore`](super::RedisStore) with a local cache, on any
//! instance, learns to evict it.

use std::sync::LazyLock;

use redis::Script;

/// Shared Lua helpers: write field/value pairs or delete fields in batches,
/// so that large records never exceed Lua's argument limits; compute a
/// session's deadline (the earlier of the idle and absolute deadlines); and
/// announce a change to a session on the invalidation channel.
const HELPERS: &str = include_str!("helpers.lua");

/// A script made of the shared helpers followed by `body`.
fn with_helpers(body: &str) -> Script {
    Script::new(&[HELPERS, body].concat())
}

/// `create.lua`. KEYS[1] = record; ARGV = now, expire-at, then field/value
/// pairs. Insert-if-absent: a live record or a forward that has not lapsed
/// is left alone (returns 0); an expired record or a lapsed forward is
/// replaced. It announces nothing on the invalidation channel: no cache
/// holds a session under a fresh random key, nor keeps an expired one.
pub(super) static CREATE: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("create.lua")));

/// `touch.lua`. KEYS[1] = record; ARGV = now, touch fraction. It does not
/// announce itself on the invalidation channel (see the tests). The second
/// call of a load, sent only when the record the load read (one `HGETALL`)
/// was due for a touch: sets `s` to now and moves the TTL to the new
/// deadline, but only if the hash is still a session (not deleted, not a
/// forward), still live at now, and still due by its current fields (so a
/// lifetime a concurrent save changed is the one the TTL follows, and `s`
/// never moves backwards). Returns 1 when it wrote, 0 otherwise.
pub(super) static TOUCH: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("touch.lua")));

/// `save.lua`. KEYS[1] = record; ARGV = now, clear, number of removals, has
/// lifetime, idle, absolute, persistent, touch fraction, then the removed
/// fields, then field/value pairs to set. Update-only: gives saved 0 and
/// writes nothing when the record is missing, expired or a forward. After the
/// patch, records the activity when due, as `SessionRecord::touch_due` says.
/// Returns `{saved, deadline, user}`: saved is 1 or 0, and when the save
/// moved the session's deadline (a touch, a new lifetime), the new
/// deadline and the session's user, so that the caller raises the user
/// index to it; otherwise 0 and false.
pub(super) static SAVE: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("save.lua")));

/// `retire.lua`. KEYS[1] = record; ARGV = now, successor (hex), until.
/// Replaces a record live at `now` by a forward to the successor that
/// expires at `until`, and returns `{1, user}` so the caller can drop the
/// user-index entry. A forward to the same successor that has not lapsed
/// gives `{1, false}` again (a retry); anything else `{0, false}`, with
/// nothing written.
pub(super) static RETIRE: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("retire.lua")));

/// `restore.lua`. KEYS[1] = record; ARGV = now, successor (hex),
/// expire-at, then field/value pairs. Only a forward to that successor that
/// has not lapsed is replaced by the record (returns 1, announcing the
/// change); anything else is left alone (returns 0). The caller indexes the
/// restored session, as after `create`.
pub(super) static RESTORE: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("restore.lua")));

/// `delete.lua`. KEYS[1] = record; ARGV[1] = now; ARGV[2], optional, the
/// user the session must belong to (`delete_owned`). Returns `{what, user,
/// successor}`: what is 1 for a session live at `now`, 2 for a forward
/// that has not lapsed (with its successor; the forward is kept, so a
/// retried logout follows it again), 0 otherwise. Everything but a live
/// forward is deleted, except, when ARGV[2] is given, a live session of
/// another user or of none, which is left untouched (and announces
/// nothing) and gives `{0, false, false}`. user is the owner of a deleted
/// record, live or not, so the caller can drop the user-index entry too.
pub(super) static DELETE: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("delete.lua")));

/// `delete_owned.lua`. KEYS[1] = record; ARGV[1] = user. Deletes the
/// record only if it belongs to that user (an index entry may outlive its
/// record, and a forward belongs to nobody), live or not: the step of
/// `delete_user`, which needs no forward reported. The trait's
/// `delete_owned` is `delete.lua` with its owner argument instead.
pub(super) static DELETE_OWNED: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("delete_owned.lua")));

/// `delete_all.lua`. KEYS[1] = record; ARGV[1] = created until, ARGV[2] =
/// now. The step of `delete_all`, for one key the scan found (or a live
/// forward led to): a forward is deleted and gives `{0, false, successor}`
/// when it had not lapsed at now (so the caller ends its successor by the
/// same rule), `{0, false, false}` when it had; a session created at or
/// before ARGV[1] is deleted and gives `{live, user, false}`, live being 1
/// when it was live at now (user is false for an anonymous one), so the
/// caller counts it and drops its user-index entry; anything else (a later
/// session, a key gone since the scan) is left as it is, announces
/// nothing, and gives `{0, false, false}`.
pub(super) static DELETE_ALL: LazyLock<Script> =
    LazyLock::new(|| with_helpers(include_str!("delete_all.lua")));

/// `index_add.lua`. KEYS[1] = user index; ARGV = member, its deadline,
/// and optionally the session's absolute deadline. Adds the member, or
/// raises its score to the deadline (never lowers it); with the absolute
/// deadline, makes the index live at least until then (Redis 7's
/// `EXPIREAT ... GT`), so that the index outlives every session in it even
/// when a raise is lost. It prunes nothing: a member scored in the past
/// may be a session whose raise was lost, so only a check of its record
/// may drop it (`index_prune.lua`).
pub(super) static INDEX_ADD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("index_add.lua")));

/// `index_prune.lua`. KEYS[1] = user index; ARGV = now, then members whose
/// records showed their sessions over. Removes each member only if its
/// score is still at or before now: a raise that landed since the record
/// was read (the session was touched) keeps it. Returns how many went.
pub(super) static INDEX_PRUNE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("index_prune.lua")));

#[cfg(test)]
mod tests {
    use super::*;

    /// The helpers are Lua `local function`s: a script that calls one
    /// without having them in front would fail only when Redis runs it.
    #[test]
    fn the_scripts_that_call_a_helper_and_only_they_have_the_helpers() {
        let scripts: [(&str, &Script, &str); 10] = [
            ("create", &CREATE, include_str!("create.lua")),
            ("touch", &TOUCH, include_str!("touch.lua")),
            ("save", &SAVE, include_str!("save.lua")),
            ("retire", &RETIRE, include_str!("retire.lua")),
            ("restore", &RESTORE, include_str!("restore.lua")),
            ("delete", &DELETE, include_str!("delete.lua")),
            (
                "delete_owned",
                &DELETE_OWNED,
                include_str!("delete_owned.lua"),
            ),
            ("delete_all", &DELETE_ALL, include_str!("delete_all.lua")),
            ("index_add", &INDEX_ADD, include_str!("index_add.lua")),
            ("index_prune", &INDEX_PRUNE, include_str!("index_prune.lua")),
        ];
        for (name, script, body) in scripts {
            let calls_helper = ["batched(", "deadline(", "changed("]
                .iter()
                .any(|helper| body.contains(helper));
            let expected = if calls_helper {
                [HELPERS, body].concat()
            } else {
                body.to_owned()
            };
            assert_eq!(
                script.get_hash(),
                Script::new(&expected).get_hash(),
                "{name}.lua"
            );
            assert!(
                !body.contains("local function"),
                "{name}.lua defines a helper; shared ones belong in helpers.lua"
            );
            assert!(
                !body.contains("{{") && !body.contains("}}"),
                "{name}.lua is plain Lua, not a format string"
            );
        }
        assert!(HELPERS.contains("local function batched("));
        assert!(HELPERS.contains("local function deadline("));
        assert!(HELPERS.contains("local function changed("));
    }

    /// A cached store on another instance learns of a change only from
    /// `changed`: every script that writes into or ends a session must
    /// call it, before it writes (if Redis refuses the `PUBLISH`, say for
    /// want of ACL rights, the script stops with nothing written). A touch
    /// is the exception: it only moves `last_seen` forward, so a cached copy
    /// it leaves behind is due for a touch, and expires, no later than the
    /// session itself, and every cache sends it to Redis then.
    #[test]
    fn every_script_that_changes_a_session_announces_it_before_writing() {
        for (name, body) in [
            ("save", include_str!("save.lua")),
            ("retire", include_str!("retire.lua")),
            ("delete", include_str!("delete.lua")),
            ("delete_owned", include_str!("delete_owned.lua")),
            ("delete_all", include_str!("delete_all.lua")),
        ] {
            let announced = body
                .find("changed(key)")
                .or_else(|| body.find("changed(KEYS[1])"))
                .unwrap_or_else(|| panic!("{name}.lua does not announce"));
            for write in ["'HSET'", "'HDEL'", "'DEL'", "'EXPIREAT'", "batched("] {
                if let Some(at) = body.find(write) {
                    assert!(
                        announced < at,
                        "{name}.lua writes ({write}) before it announces"
                    );
                }
            }
        }
        assert!(!include_str!("touch.lua").contains("changed("));
    }
}
