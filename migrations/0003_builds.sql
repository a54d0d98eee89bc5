-- CodeArts build history and CrafterCMS Studio's publishing queue, read from
-- the archive by pipeline (a build task, a site).

-- When a run started, as CodeArts counts a build's start: status.startTime,
-- else the run's creation. A build's history filter ("started within the
-- last N days") is on the earliest of its runs'.
ALTER TABLE stage_runs ADD COLUMN start_time timestamptz;
UPDATE stage_runs
   SET start_time = COALESCE((object #>> '{status,startTime}')::timestamptz, created_at);

-- The builds of a task that started since a time (candidates), and the runs
-- of given builds (whether one of them started before it; a build's runs).
CREATE INDEX stage_runs_build_start ON stage_runs (pipeline, start_time);
CREATE INDEX stage_runs_builds ON stage_runs (pipeline, pipeline_counter, start_time);

-- Studio's queue of a site, newest first, in the order the REST API sorts
-- the cluster's packages (`sidecar::studio::queue_order`).
CREATE INDEX stage_runs_site_queue ON stage_runs (
    pipeline, created_at DESC NULLS LAST, pipeline_counter DESC, stage_counter DESC,
    name COLLATE "C", uid COLLATE "C");
