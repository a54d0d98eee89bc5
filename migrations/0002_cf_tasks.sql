-- Cloud Foundry task lists from the archive: they order by a task's
-- `created_at` or `updated_at`, so each is a column with an index.

-- When a run last changed, as its Cloud Foundry task shows it
-- (`updated_at`): the latest of its creation, start, completion, accepted
-- cancel and conditions' transitions, never before its creation, to the
-- second (the task's format). The REST API computes the same of the
-- cluster's runs (`sidecar::cloudfoundry::created_and_updated`). Unknown
-- when the creation is (then the REST API shows the time of the request:
-- NULL sorts as the latest, as that does).
CREATE FUNCTION stage_run_updated_at(created timestamptz, object jsonb)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN created IS NULL THEN NULL ELSE date_trunc('second', GREATEST(
    created,
    (object #>> '{status,startTime}')::timestamptz,
    (object #>> '{status,completionTime}')::timestamptz,
    (object #>> '{status,cancel,acceptedAt}')::timestamptz,
    (SELECT max((c ->> 'lastTransitionTime')::timestamptz)
       FROM jsonb_array_elements(CASE jsonb_typeof(object #> '{status,conditions}')
                                 WHEN 'array' THEN object #> '{status,conditions}'
                                 ELSE '[]'::jsonb END) AS c)
  )) END
$$;

ALTER TABLE stage_runs ADD COLUMN updated_at timestamptz;

-- Kept by the database, so that every writer of rows gets it right.
CREATE FUNCTION stage_runs_set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := stage_run_updated_at(NEW.created_at, NEW.object);
  RETURN NEW;
END
$$;

CREATE TRIGGER stage_runs_updated_at
  BEFORE INSERT OR UPDATE OF created_at, object ON stage_runs
  FOR EACH ROW EXECUTE FUNCTION stage_runs_set_updated_at();

UPDATE stage_runs SET updated_at = stage_run_updated_at(created_at, object);

-- Task lists in either order (ties, by sequence id and guid, are sorted
-- incrementally on top of these).
CREATE INDEX stage_runs_created_at ON stage_runs (created_at);
CREATE INDEX stage_runs_updated_at ON stage_runs (updated_at);
