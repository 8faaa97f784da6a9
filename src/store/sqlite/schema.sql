CREATE TABLE IF NOT EXISTS {table} (
    -- SHA-256 of the session ID (32 bytes), never the ID itself.
    key BLOB NOT NULL PRIMARY KEY,
    user_id TEXT NULL,
    -- The session data: a JSON object, as text, patched in place with
    -- json_set and json_remove.
    data TEXT NOT NULL,
    -- Timestamps are Unix seconds from the layer's clock.
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    absolute_deadline INTEGER NOT NULL,
    idle_timeout_secs INTEGER NOT NULL,
    persistent INTEGER NOT NULL,
    -- The earlier of last_seen + idle_timeout_secs and absolute_deadline.
    expires_at INTEGER NOT NULL,
    -- Set on a forward: the key the session moved to.
    successor BLOB NULL,
    -- The device the session was logged in from; NULL when not kept.
    user_agent TEXT NULL,
    client_ip TEXT NULL
) STRICT, WITHOUT ROWID;
-- A user's live sessions are a range of this index (user, then deadline):
-- counting and listing them never reads the user's expired rows, however
-- many wait for the sweep.
CREATE INDEX IF NOT EXISTS {user_id_idx}
    ON {table} (user_id, expires_at) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {expires_at_idx}
    ON {table} (expires_at);
