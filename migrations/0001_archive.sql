-- The archive of finished StageRuns and CancelRequests. Each row holds the
-- object as it left the cluster (`object`, without pod templates), from which
-- the read routes render the same JSON as from the cluster, and beside it
-- the columns those routes filter and order by.

CREATE TABLE stage_runs (
    uid              text PRIMARY KEY,
    namespace        text NOT NULL,
    name             text NOT NULL,
    pipeline         text NOT NULL,
    pipeline_counter bigint NOT NULL,
    stage            text NOT NULL,
    stage_counter    bigint NOT NULL,
    -- GoCD stage id, and the highest of its jobs' ids: ids are floored above both.
    id               bigint,
    max_job_id       bigint,
    phase            text NOT NULL,
    result           text,
    created_at       timestamptz,
    completion_time  timestamptz,
    labels           jsonb NOT NULL DEFAULT '{}',
    object           jsonb NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now()
);

-- GoCD stage history, newest first.
CREATE INDEX stage_runs_stage_history
    ON stage_runs (namespace, pipeline, stage, pipeline_counter DESC, stage_counter DESC);
-- GoCD pipeline history and instances, CodeArts builds, Studio packages of a site.
CREATE INDEX stage_runs_pipeline
    ON stage_runs (namespace, pipeline, pipeline_counter DESC);
-- Cloud Foundry task lists filtered by label.
CREATE INDEX stage_runs_labels ON stage_runs USING gin (labels jsonb_path_ops);
-- GoCD reads by stage id; the id floor (max).
CREATE INDEX stage_runs_id ON stage_runs (id);
CREATE INDEX stage_runs_max_job_id ON stage_runs (max_job_id);

CREATE TABLE cancel_requests (
    uid             text PRIMARY KEY,
    namespace       text NOT NULL,
    name            text NOT NULL,
    phase           text,
    requested_by    text,
    created_at      timestamptz,
    completion_time timestamptz,
    -- The StageRuns it acted on (status.targets[].uid).
    target_uids     text[] NOT NULL DEFAULT '{}',
    labels          jsonb NOT NULL DEFAULT '{}',
    object          jsonb NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cancel_requests_name ON cancel_requests (namespace, name);
CREATE INDEX cancel_requests_targets ON cancel_requests USING gin (target_uids);
