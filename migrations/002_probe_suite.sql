-- The probe suite: traceroute hops queryable one by one, and long-lived
-- sessions as records of their own. Both are children of a result (same
-- agent_id, measured_at and seq) and, like results, range-partitioned by
-- measured_at with keys that hold the time column and the agent.

-- One row per probe of a Paris traceroute. hop NULL is a star (no answer:
-- rate-limited or filtered, not a black hole).
CREATE TABLE trace_hops (
    agent_id     bigint NOT NULL,
    measured_at  timestamptz NOT NULL,
    seq          bigint NOT NULL,
    ttl          smallint NOT NULL CHECK (ttl BETWEEN 1 AND 255),
    attempt      smallint NOT NULL DEFAULT 0,
    hop          inet,
    rtt_us       bigint,
    icmp_type    smallint,
    icmp_code    smallint,
    reply_ttl    smallint,
    mpls         jsonb,
    PRIMARY KEY (agent_id, measured_at, seq, ttl, attempt)
) PARTITION BY RANGE (measured_at);
CREATE INDEX trace_hops_hop ON trace_hops (hop, measured_at);

-- One row per long-lived connection (DNS over TCP or HTTP keep-alive): when
-- it opened (measured_at) and closed, how it ended, and what answered on it.
CREATE TABLE sessions (
    agent_id        bigint NOT NULL,
    measured_at     timestamptz NOT NULL,
    seq             bigint NOT NULL,
    target_id       bigint NOT NULL,
    address         inet NOT NULL,
    protocol        text NOT NULL,
    closed_at       timestamptz NOT NULL,
    end_reason      text NOT NULL,
    queries         integer NOT NULL,
    answers         integer NOT NULL,
    first_identity  text,
    last_identity   text,
    PRIMARY KEY (agent_id, measured_at, seq)
) PARTITION BY RANGE (measured_at);
CREATE INDEX sessions_target_time ON sessions (target_id, measured_at);

-- Partitions now cover every time-partitioned table; the count returned is
-- still in days (results partitions created).
CREATE OR REPLACE FUNCTION anyscope_ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    last_d  date := (to_ts AT TIME ZONE 'UTC')::date;
    parent  text;
    part    text;
    created integer := 0;
BEGIN
    IF last_d - (from_ts AT TIME ZONE 'UTC')::date > 400 THEN
        RAISE EXCEPTION 'anyscope_ensure_partitions: range of % days is too long',
            last_d - (from_ts AT TIME ZONE 'UTC')::date;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('anyscope_ensure_partitions'));
    FOREACH parent IN ARRAY ARRAY['results', 'trace_hops', 'sessions'] LOOP
        d := (from_ts AT TIME ZONE 'UTC')::date;
        WHILE d <= last_d LOOP
            part := format('%s_%s', parent, to_char(d, 'YYYYMMDD'));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    part, parent,
                    (d::timestamp AT TIME ZONE 'UTC'),
                    ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                IF parent = 'results' THEN
                    created := created + 1;  -- counted in days, as before
                END IF;
            END IF;
            d := d + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Partitions of the new tables for every day results already has one.
DO $$
DECLARE
    part text;
    day  timestamptz;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'results'::regclass AND c.relname ~ '^results_[0-9]{8}$'
    LOOP
        day := to_date(substr(part, 9), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC';
        PERFORM anyscope_ensure_partitions(day, day);
    END LOOP;
END $$;

-- How HTTP probes reach a target and read its site, and how long sessions
-- last before the agent reconnects.
ALTER TABLE targets
    ADD COLUMN http jsonb,
    ADD COLUMN session_life_seconds double precision NOT NULL DEFAULT 0 CHECK (session_life_seconds >= 0);
