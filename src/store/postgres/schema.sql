CREATE TABLE IF NOT EXISTS {table} (
    key bytea PRIMARY KEY,
    user_id text NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    absolute_deadline timestamptz NOT NULL,
    idle_timeout_secs bigint NOT NULL,
    persistent boolean NOT NULL,
    expires_at timestamptz NOT NULL,
    successor bytea NULL,
    -- The device the session was logged in from; NULL when not kept.
    user_agent text NULL,
    -- inet rather than text: the server checks every value is an address,
    -- stores it in at most 19 bytes, and lets your own queries match
    -- networks (client_ip << '10.0.0.0/8'). Always a single host address.
    client_ip inet NULL
);
-- A user's live sessions are a range of this index (user, then deadline):
-- counting and listing them never reads the user's expired rows, however
-- many wait for the sweep.
CREATE INDEX IF NOT EXISTS {user_id_idx}
    ON {table} (user_id, expires_at) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {expires_at_idx}
    ON {table} (expires_at);
-- Session watches on every instance of the app hear through this channel
-- of each session that ends or moves: the key of each deleted or retired
-- row, in hex, sent when the transaction that changed it commits.
CREATE OR REPLACE FUNCTION {announce_fn}() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], encode(OLD.key, 'hex'));
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER {announce_trigger}
    AFTER DELETE OR UPDATE OF successor ON {table}
    FOR EACH ROW EXECUTE FUNCTION {announce_fn}('{channel}');
