-- The dashboard's reads of the analysis outputs. Plain (non-unique) indexes
-- that lead with the target or the time column, so they map onto
-- TimescaleDB hypertables and Citus tables like the keys of 001.

-- A target's catchment as of a time: the latest windows that start at or
-- before it (two index probes), then their rows.
CREATE INDEX catchments_target_window ON catchments (target_id, window_start);

-- A target's switches over a time range, in time order (the timeline).
CREATE INDEX switches_target_at ON switches (target_id, at);

-- Incidents over a time range for every target (newest first), and the open
-- ones (the overview), which are few however long the history.
CREATE INDEX incidents_started ON incidents (started_at);
CREATE INDEX incidents_open ON incidents (started_at) WHERE ended_at IS NULL;
