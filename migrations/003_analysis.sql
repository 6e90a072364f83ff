-- Analysis: reading results by time, and keeping the analyzer's outputs.

-- Analysis reads results in time order, chunk by chunk (measured_at), and the
-- incremental analyzer reads what arrived since its last run (received_at).
-- Rows arrive roughly in time order, so BRIN summaries stay tight while
-- costing a few pages per partition, and ingest pays almost nothing for them.
CREATE INDEX results_measured_brin ON results USING brin (measured_at);
CREATE INDEX results_received_brin ON results USING brin (received_at);

-- Where each incremental analyzer stopped: every result received at or
-- before received_through has been analysed; measured_through is the newest
-- measurement time among them (a restart replays history back from there).
CREATE TABLE analysis_state (
    name              text PRIMARY KEY,
    received_through  timestamptz NOT NULL,
    measured_through  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Switches: failed observations between the two sites, and the size of the
-- site's catchment the vantage point left (what tells a withdrawal apart).
ALTER TABLE switches ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE switches ADD COLUMN cause_detail text NOT NULL DEFAULT '';
ALTER TABLE switches ADD CONSTRAINT switches_cause CHECK (cause IN ('withdrawal', 'routing', 'load_balancing', 'unknown'));

-- Incidents: a vantage-point incident spans every target (target_id NULL);
-- address NULL means every address of the target. key is stable across
-- re-analysis (kind, target, address, site or vantage point, start), so the
-- analyzer updates an incident in place as it grows and ends.
ALTER TABLE incidents ALTER COLUMN target_id DROP NOT NULL;
ALTER TABLE incidents ADD COLUMN address inet;
ALTER TABLE incidents ADD COLUMN key text NOT NULL;
ALTER TABLE incidents ADD COLUMN vantage_points text[] NOT NULL DEFAULT '{}';
ALTER TABLE incidents ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX incidents_key ON incidents (key, started_at);
