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
    successor bytea NULL
);
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_attribute
        WHERE attrelid = '{table}'::regclass
          AND attname = 'successor' AND NOT attisdropped
    ) THEN
        ALTER TABLE {table} ADD COLUMN successor bytea NULL;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS {user_id_idx}
    ON {table} (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {expires_at_idx}
    ON {table} (expires_at);
