-- How many archived runs carry each label, per namespace and pipeline, kept
-- by the archive's own inserts (and deletes) as `stage_run_counts` is: a
-- Cloud Foundry task list selected by one label (`env=prod`,
-- `env in (prod,dev)`) totals a few rows instead of counting every run that
-- carries it, however many that is.

-- No run is stored or removed while the counts are taken and their trigger
-- is created (the lock is held until this migration commits).
LOCK TABLE stage_runs IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE stage_run_label_counts (
    namespace text NOT NULL,
    key       text NOT NULL,
    value     text NOT NULL,
    pipeline  text NOT NULL,
    runs      bigint NOT NULL,
    PRIMARY KEY (namespace, key, value, pipeline)
);

INSERT INTO stage_run_label_counts (namespace, key, value, pipeline, runs)
  SELECT r.namespace, l.key, l.value, r.pipeline, COUNT(*)
    FROM stage_runs r, jsonb_each_text(r.labels) AS l
    GROUP BY r.namespace, l.key, l.value, r.pipeline;

-- A row's namespace, pipeline and labels never change: inserts and deletes
-- are all there is to count. A repeated insert (ON CONFLICT DO NOTHING)
-- stores nothing and fires nothing. Each run's labels are upserted in key
-- order, so that concurrent writers take the rows' locks in one order.
CREATE FUNCTION stage_run_labels_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO stage_run_label_counts AS c (namespace, key, value, pipeline, runs)
      SELECT NEW.namespace, l.key, l.value, NEW.pipeline, 1
        FROM jsonb_each_text(NEW.labels) AS l ORDER BY l.key
      ON CONFLICT (namespace, key, value, pipeline) DO UPDATE SET runs = c.runs + 1;
    RETURN NEW;
  END IF;
  UPDATE stage_run_label_counts AS c SET runs = c.runs - 1
    FROM jsonb_each_text(OLD.labels) AS l
    WHERE c.namespace = OLD.namespace AND c.key = l.key AND c.value = l.value
      AND c.pipeline = OLD.pipeline;
  RETURN OLD;
END
$$;

CREATE TRIGGER stage_run_labels_counted
  AFTER INSERT OR DELETE ON stage_runs
  FOR EACH ROW EXECUTE FUNCTION stage_run_labels_count();
