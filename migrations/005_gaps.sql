-- Results agents lost before upload: a full spool dropped its oldest
-- results, or a spool segment was missing or damaged. Each row is a run of
-- the agent's sequence numbers that will never arrive, so that for every
-- agent each sequence number from 1 to the highest is a stored result or
-- inside a gap, and analysis can show lost data as lost data, never as a
-- failure.
--
-- Rows are few (one per run of drops): the table is neither partitioned
-- nor indexed by time. Its key leads with the agent, the distribution key
-- under Citus.
CREATE TABLE agent_gaps (
    agent_id     bigint NOT NULL,
    first_seq    bigint NOT NULL CHECK (first_seq > 0),
    last_seq     bigint NOT NULL,
    -- results lost in the run (fewer than the run's length when it also
    -- covers results that were delivered)
    count        bigint NOT NULL,
    -- when the lost results were measured, as far as the agent knows
    -- (NULL: unknown)
    lost_from    timestamptz,
    lost_to      timestamptz,
    reason       text NOT NULL CHECK (reason IN ('spool_full', 'segment_lost', 'record_corrupt')),
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, first_seq),
    CHECK (last_seq >= first_seq),
    CHECK (count BETWEEN 1 AND last_seq - first_seq + 1),
    CHECK (lost_from IS NULL OR lost_to IS NULL OR lost_from <= lost_to)
);
