-- How many runs each stage has in the archive, kept by the archive's own
-- inserts (and deletes), so that a history's total costs a few rows however
-- long the history is: GoCD's stage history and Cloud Foundry's task lists
-- sum these instead of counting rows.

-- No run is stored or removed while the counts are taken and their trigger
-- is created (the lock is held until this migration commits).
LOCK TABLE stage_runs IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE stage_run_counts (
    namespace text NOT NULL,
    pipeline  text NOT NULL,
    stage     text NOT NULL,
    runs      bigint NOT NULL,
    PRIMARY KEY (namespace, pipeline, stage)
);

INSERT INTO stage_run_counts (namespace, pipeline, stage, runs)
  SELECT namespace, pipeline, stage, COUNT(*) FROM stage_runs GROUP BY namespace, pipeline, stage;

-- A row's namespace, pipeline and stage never change: inserts and deletes
-- are all there is to count. A repeated insert (ON CONFLICT DO NOTHING)
-- stores nothing and fires nothing.
CREATE FUNCTION stage_runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO stage_run_counts AS c (namespace, pipeline, stage, runs)
      VALUES (NEW.namespace, NEW.pipeline, NEW.stage, 1)
      ON CONFLICT (namespace, pipeline, stage) DO UPDATE SET runs = c.runs + 1;
    RETURN NEW;
  END IF;
  UPDATE stage_run_counts SET runs = runs - 1
    WHERE namespace = OLD.namespace AND pipeline = OLD.pipeline AND stage = OLD.stage;
  RETURN OLD;
END
$$;

CREATE TRIGGER stage_runs_counted
  AFTER INSERT OR DELETE ON stage_runs
  FOR EACH ROW EXECUTE FUNCTION stage_runs_count();
