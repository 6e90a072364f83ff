-- anyscope foundation schema.
--
-- Portability rule (TimescaleDB hypertables, Citus distributed tables): every
-- unique key on measurement data includes the time column (measured_at) and
-- the agent (agent_id), so results can be partitioned by time and
-- distributed by agent without changing a key.

-- Vantage points: anyscope agents and imported probes (e.g. RIPE Atlas).
CREATE TABLE agents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    latitude    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision CHECK (longitude BETWEEN -180 AND 180),
    provider    text NOT NULL DEFAULT '',
    region      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz,
    -- highest result sequence number stored for this agent
    last_seq    bigint NOT NULL DEFAULT 0
);

-- Bearer tokens; an agent may hold several during a rotation. Only a SHA-256
-- hash of the secret is stored. The token sent on the wire is
-- "ast_<id>_<secret>": the id finds the row, the secret is compared in
-- constant time against token_hash.
CREATE TABLE agent_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX agent_tokens_agent_id ON agent_tokens (agent_id);

-- Anycast targets, as declared in YAML and applied with `anyscope targets apply`.
-- Targets are never deleted by apply (results refer to them); a target that
-- disappears from the file is retired and leaves every schedule.
CREATE TABLE targets (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    addresses        inet[] NOT NULL,
    probes           text[] NOT NULL,
    interval_seconds double precision NOT NULL CHECK (interval_seconds > 0),
    nsid_qname       text NOT NULL DEFAULT '.',
    -- ordered identity rules: [{"pattern": "...", "site": "${site}"}, ...]
    identity_rules   jsonb NOT NULL DEFAULT '[]',
    updated_at       timestamptz NOT NULL DEFAULT now(),
    retired_at       timestamptz
);

-- Sites (PoPs). target_id NULL: a global site, usable by every target.
CREATE TABLE sites (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id  bigint REFERENCES targets (id) ON DELETE CASCADE,
    code       text NOT NULL CHECK (code <> ''),
    name       text NOT NULL DEFAULT '',
    latitude   double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude  double precision CHECK (longitude BETWEEN -180 AND 180),
    UNIQUE NULLS NOT DISTINCT (target_id, code)
);

-- Measurements. Range-partitioned by measured_at, one partition per UTC day,
-- created ahead by anyscope_ensure_partitions(). The primary key makes
-- re-delivery of a result a no-op.
CREATE TABLE results (
    agent_id     bigint NOT NULL,
    seq          bigint NOT NULL CHECK (seq > 0),
    -- the seq of the first result of the probe round this one belongs to
    round        bigint,
    measured_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    target_id    bigint NOT NULL,
    address      inet NOT NULL,
    kind         text NOT NULL,
    transport    text NOT NULL,
    query        text NOT NULL DEFAULT '',
    failure      text NOT NULL DEFAULT '',
    rtt_us       bigint,
    rcode        text,
    -- the string that names the server (TXT or NSID), untrusted text
    identity     text,
    nsid         bytea,
    -- everything else the probe measured, as sent by the agent
    detail       jsonb,
    PRIMARY KEY (agent_id, measured_at, seq)
) PARTITION BY RANGE (measured_at);
CREATE INDEX results_target_time ON results (target_id, measured_at);

-- anyscope_ensure_partitions creates the daily partitions of results that
-- cover [from_ts, to_ts]. Safe to call concurrently (advisory lock) and often
-- (existing partitions are skipped).
CREATE FUNCTION anyscope_ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d       date := (from_ts AT TIME ZONE 'UTC')::date;
    last_d  date := (to_ts AT TIME ZONE 'UTC')::date;
    part    text;
    created integer := 0;
BEGIN
    IF last_d - d > 400 THEN
        RAISE EXCEPTION 'anyscope_ensure_partitions: range of % days is too long', last_d - d;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('anyscope_ensure_partitions'));
    WHILE d <= last_d LOOP
        part := format('results_%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF results FOR VALUES FROM (%L) TO (%L)',
                part,
                (d::timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END $$;

-- Analysis outputs. Keys include the time column and the agent.

-- Which site served a vantage point for a (target address, probe) over a window.
CREATE TABLE catchments (
    agent_id      bigint NOT NULL,
    target_id     bigint NOT NULL,
    address       inet NOT NULL,
    kind          text NOT NULL,
    transport     text NOT NULL,
    query         text NOT NULL DEFAULT '',
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    site          text NOT NULL,
    observations  integer NOT NULL,
    confidence    double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, window_start, target_id, address, kind, transport, query)
);

-- A change of site between consecutive successful observations.
CREATE TABLE switches (
    agent_id    bigint NOT NULL,
    target_id   bigint NOT NULL,
    address     inet NOT NULL,
    kind        text NOT NULL,
    transport   text NOT NULL,
    query       text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    from_site   text NOT NULL,
    to_site     text NOT NULL,
    -- time of the last observation at from_site
    last_from   timestamptz NOT NULL,
    cause       text NOT NULL DEFAULT 'unknown',
    tcp_broke   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (agent_id, at, target_id, address, kind, transport, query)
);

-- Site black holes, outages and vantage-point incidents.
CREATE TABLE incidents (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    target_id       bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('blackhole', 'outage', 'vantage_point')),
    site            text NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    agent_ids       bigint[] NOT NULL DEFAULT '{}',
    evidence        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, started_at)
);
CREATE INDEX incidents_target_time ON incidents (target_id, started_at);
