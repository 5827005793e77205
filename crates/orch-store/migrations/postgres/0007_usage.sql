-- orch store schema, version 7 (PostgreSQL): what each agent run consumed.
--
-- jobs.usage is the run's orch_core::Usage as its adapter read it from the
-- agent's event stream (turns, input/output/cache tokens, cost_usd), written
-- with the job's exit by its owner (fenced by epoch like every owner write).
-- NULL for runs that reported nothing (command adapter, lost runs). An item's
-- usage is the sum over its jobs, computed when read.

ALTER TABLE jobs ADD COLUMN usage JSONB;
