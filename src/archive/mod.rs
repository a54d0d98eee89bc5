//! The archive: finished StageRuns and CancelRequests kept in PostgreSQL
//! once they leave the cluster, so that history costs the cluster nothing.
//!
//! A row per object, keyed by its uid: storing a run again is a no-op, so
//! that "archive, then delete from the cluster" can be repeated after a
//! crash in between without losing or duplicating a run. Each row holds the
//! object as it left the cluster, pod templates aside (`object`), from which
//! reads rebuild the same resource, and the columns the reads filter and
//! order by. Every query is parameterised.
//!
//! The schema is versioned (`migrations/`, embedded in the binary) and
//! applied before the first query. sqlx's PostgreSQL migrator holds an
//! advisory lock (`pg_advisory_lock`, keyed by the database's name) from
//! before it reads which migrations are applied until it has applied the
//! rest, so replicas starting at once apply each migration exactly once.

use std::time::Duration;

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::crd::{CancelRequest, StageRun};
use crate::{Error, Result};

mod pipelines;
pub use pipelines::{CounterPage, CounterWindow};

/// Connections to the database at most, unless configured.
pub const DEFAULT_POOL_SIZE: u32 = 4;

/// How long a query waits for a connection: a database that is away makes
/// callers fail (and retry later) rather than wait.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The archive database.
pub struct Archive {
    pool: PgPool,
    /// Set once the schema is known to be current.
    migrated: tokio::sync::OnceCell<()>,
    metrics: QueryMetrics,
    role: Role,
}

/// What a process does to the archive's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Applies the migrations it knows (the controller).
    Owner,
    /// Only reads, and waits for the schema it knows to be applied: the REST
    /// API, which may hold a role that can only `SELECT`.
    Reader,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    query: &'static str,
}

/// How long each query takes and how often it fails, by what it does (the
/// step a failure names).
#[derive(Clone)]
struct QueryMetrics {
    seconds: Family<QueryLabels, Histogram, fn() -> Histogram>,
    errors: Family<QueryLabels, Counter>,
}

fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl QueryMetrics {
    fn new() -> Self {
        QueryMetrics {
            seconds: Family::new_with_constructor(query_histogram as fn() -> Histogram),
            errors: Family::default(),
        }
    }

    fn observe(&self, query: &'static str, elapsed: Duration, ok: bool) {
        let labels = QueryLabels { query };
        self.seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

/// Times a database call and names it when it fails:
/// `query.fetch_all(&self.pool).timed(&self.metrics, "read the runs").await?`.
trait Timed<T>: std::future::Future<Output = std::result::Result<T, sqlx::Error>> + Sized {
    async fn timed(self, metrics: &QueryMetrics, step: &'static str) -> Result<T> {
        let started = std::time::Instant::now();
        let out = self.await;
        metrics.observe(step, started.elapsed(), out.is_ok());
        out.step(step)
    }
}

impl<T, F> Timed<T> for F where F: std::future::Future<Output = std::result::Result<T, sqlx::Error>> {}

/// A page of archived runs and how many match in all.
#[derive(Debug, Default)]
pub struct Page {
    pub runs: Vec<StageRun>,
    pub total: i64,
}

/// Which side of a stage id a page of archived runs is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdWindow {
    /// Older runs, ids below this one (`i64::MAX`: the newest).
    Below(i64),
    /// Newer runs, ids above this one.
    Above(i64),
}

/// Archived runs paged by stage id, newest first, and the newest and
/// oldest ids of all that match (`None` when none do).
#[derive(Debug, Default)]
pub struct IdPage {
    pub runs: Vec<StageRun>,
    pub newest: Option<i64>,
    pub oldest: Option<i64>,
}

/// The runs of one stage in namespaces `$1` (all when empty), pipeline `$2`,
/// stage `$3`, without the uids `$4`. A macro, so that queries stay static
/// text (sqlx takes no other without an assertion).
macro_rules! of_stage {
    () => {
        "FROM stage_runs WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
         AND pipeline = $2 AND stage = $3 AND NOT (uid = ANY($4::text[]))"
    };
}

/// GoCD's stage-history order, newest pipeline run, then stage run, first;
/// ties broken by creation time, name and uid, byte-wise (`COLLATE "C"`),
/// exactly as the REST API orders the cluster's runs
/// (`sidecar::history::newest_first`), so that the two merge into one
/// history.
macro_rules! newest_first {
    () => {
        "pipeline_counter DESC, stage_counter DESC, created_at DESC NULLS LAST, \
         name COLLATE \"C\" DESC, uid COLLATE \"C\" DESC"
    };
}

mod builds;
pub use builds::BuildPage;

/// Names a failed database call: `query.timed(&self.metrics, "store the runs").await?`.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T>;
}

impl<T> Step<T> for std::result::Result<T, sqlx::Error> {
    fn step(self, step: &'static str) -> Result<T> {
        self.map_err(|source| Error::Archive { step, source })
    }
}

// Cloud Foundry task lists.
mod tasks;
pub use tasks::{TaskFilter, TaskOrder, TaskTime};

impl Archive {
    /// A pool of at most `pool_size` connections to `url`, opened as
    /// queries need them: a database that is away at start fails the
    /// queries made meanwhile, not the process. Fails only on a bad URL.
    pub fn connect(url: &str, pool_size: u32) -> Result<Self> {
        Self::connect_as(url, pool_size, Role::Owner)
    }

    /// [`Self::connect`] for a process in `role`.
    pub fn connect_as(url: &str, pool_size: u32, role: Role) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Every read is planned for its own values. A prepared
            // statement's generic plan assumes a selectivity that no value
            // has: for `labels @> $1` it guesses 0.1% of the rows, and a
            // label that every run carries was then read through its index
            // and sorted whole (100,000 runs: 665 ms, against 1 ms down the
            // order's index). Planning costs a fraction of a millisecond.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET plan_cache_mode = force_custom_plan")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy(url)
            .step("read the archive's URL")?;
        Ok(Archive {
            pool,
            migrated: tokio::sync::OnceCell::new(),
            metrics: QueryMetrics::new(),
            role,
        })
    }

    /// Registers the archive's query metrics (latency and failures by
    /// query) with a process's registry.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "cancel_operator_archive_query_seconds",
            "Archive (PostgreSQL) query latency, by query",
            self.metrics.seconds.clone(),
        );
        registry.register(
            "cancel_operator_archive_query_errors",
            "Archive (PostgreSQL) queries that failed, by query",
            self.metrics.errors.clone(),
        );
    }

    /// Whether the database answers (and its schema is current).
    pub async fn ping(&self) -> Result<()> {
        self.migrate().await?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .timed(&self.metrics, "ping")
            .await
            .map(|_| ())
    }

    /// Applies the migrations this binary knows and the database lacks (a
    /// reader checks that they are applied); once per process (every query
    /// waits for it).
    pub async fn migrate(&self) -> Result<()> {
        self.migrated
            .get_or_try_init(|| async {
                match self.role {
                    Role::Owner => MIGRATOR
                        .run(&self.pool)
                        .await
                        .map_err(|e| Error::ArchiveSchema(Box::new(e))),
                    Role::Reader => self.schema_applied().await,
                }
            })
            .await
            .map(|_| ())
    }

    /// Whether every migration this binary knows has been applied.
    async fn schema_applied(&self) -> Result<()> {
        let applied: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .timed(&self.metrics, "read the schema's version")
        .await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if applied < known {
            return Err(Error::ArchiveSchemaBehind { applied, known });
        }
        Ok(())
    }

    /// Stores finished runs, in one statement: all or none. A run already
    /// stored (by uid) is left as it is. Returns how many were new.
    pub async fn archive_stage_runs(&self, runs: &[StageRun]) -> Result<u64> {
        self.migrate().await?;
        let rows = runs.iter().map(RunRow::of).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let c = RunColumns::of(rows);
        // One row per element of the arrays, in one round trip: a batch
        // costs what storing it costs, not a round trip per run.
        let done = sqlx::query(
            "INSERT INTO stage_runs (uid, namespace, name, pipeline, pipeline_counter, stage, \
             stage_counter, id, max_job_id, phase, result, created_at, completion_time, labels, \
             object, start_time) \
             SELECT uid, namespace, name, pipeline, pipeline_counter, stage, stage_counter, id, \
               max_job_id, phase, result, created_at::timestamptz, completion_time::timestamptz, \
               labels, object, start_time::timestamptz \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], \
               $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[], \
               $13::text[], $14::jsonb[], $15::jsonb[], $16::text[]) \
               AS r(uid, namespace, name, pipeline, pipeline_counter, stage, stage_counter, id, \
                    max_job_id, phase, result, created_at, completion_time, labels, object, \
                    start_time) \
             ON CONFLICT (uid) DO NOTHING",
        )
        .bind(c.uid)
        .bind(c.namespace)
        .bind(c.name)
        .bind(c.pipeline)
        .bind(c.pipeline_counter)
        .bind(c.stage)
        .bind(c.stage_counter)
        .bind(c.id)
        .bind(c.max_job_id)
        .bind(c.phase)
        .bind(c.result)
        .bind(c.created_at)
        .bind(c.completion_time)
        .bind(c.labels)
        .bind(c.object)
        .bind(c.start_time)
        .execute(&self.pool)
        .timed(&self.metrics, "store runs")
        .await?;
        Ok(done.rows_affected())
    }

    /// Stores finished CancelRequests as [`Self::archive_stage_runs`] does runs.
    pub async fn archive_cancel_requests(&self, requests: &[CancelRequest]) -> Result<u64> {
        self.migrate().await?;
        let mut tx = self
            .pool
            .begin()
            .timed(&self.metrics, "begin storing requests")
            .await?;
        let mut stored = 0;
        for req in requests {
            let uid = req.uid().ok_or(Error::MissingField("uid"))?;
            let status = req.status.as_ref();
            let targets: Vec<String> = (status.iter())
                .flat_map(|s| s.targets.iter().map(|t| t.uid.clone()))
                .collect();
            let done = sqlx::query(
                "INSERT INTO cancel_requests (uid, namespace, name, phase, requested_by, created_at, \
                 completion_time, target_uids, labels, object) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7::text::timestamptz, $8, $9, $10) \
                 ON CONFLICT (uid) DO NOTHING",
            )
            .bind(uid)
            .bind(req.namespace().ok_or(Error::MissingField("namespace"))?)
            .bind(req.name_any())
            .bind(status.and_then(|s| word(&s.phase)))
            .bind(&req.spec.requested_by)
            .bind(req.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()))
            .bind(status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0.to_string()))
            .bind(targets)
            .bind(json!(req.labels()))
            .bind(object_of(&trimmed_request(req))?)
            .execute(&mut *tx)
            .timed(&self.metrics, "store a request")
            .await?;
            stored += done.rows_affected();
        }
        tx.commit()
            .timed(&self.metrics, "commit the stored requests")
            .await?;
        Ok(stored)
    }

    /// The highest stage id and the highest job id archived (0 when none).
    pub async fn max_ids(&self) -> Result<(i64, i64)> {
        self.migrate().await?;
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT COALESCE(MAX(id), 0), COALESCE(MAX(max_job_id), 0) FROM stage_runs",
        )
        .fetch_one(&self.pool)
        .timed(&self.metrics, "read the highest archived ids")
        .await
    }

    /// The namespaces with archived runs of a pipeline's stage: those
    /// whose permissions a history read must ask for. Walks the namespaces
    /// of the history index one by one (a loose index scan), so that its cost
    /// follows the number of namespaces, not of runs.
    pub async fn stage_namespaces(&self, pipeline: &str, stage: &str) -> Result<Vec<String>> {
        self.namespaces_with(Some(pipeline), Some(stage)).await
    }

    /// The namespaces with archived runs (of a pipeline, or of one of its
    /// stages, when given).
    async fn namespaces_with(
        &self,
        pipeline: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Vec<String>> {
        self.migrate().await?;
        sqlx::query_scalar(
            "WITH RECURSIVE ns(namespace) AS ( \
               (SELECT namespace FROM stage_runs ORDER BY namespace LIMIT 1) \
               UNION ALL \
               SELECT (SELECT s.namespace FROM stage_runs s WHERE s.namespace > ns.namespace \
                       ORDER BY s.namespace LIMIT 1) \
               FROM ns WHERE ns.namespace IS NOT NULL) \
             SELECT namespace FROM ns WHERE namespace IS NOT NULL AND ($1::text IS NULL OR EXISTS ( \
               SELECT 1 FROM stage_runs s WHERE s.namespace = ns.namespace \
               AND s.pipeline = $1 AND ($2::text IS NULL OR s.stage = $2)))",
        )
        .bind(pipeline)
        .bind(stage)
        .fetch_all(&self.pool)
        .timed(&self.metrics, "list the namespaces of archived runs")
        .await
    }

    /// The archived runs of a pipeline's stage in `namespaces` (all when
    /// empty) but for the uids in `excluding` (runs the caller has from the
    /// cluster), in GoCD's stage-history order (`newest_first!`), `limit`
    /// from `offset`, with their total.
    pub async fn stage_history(
        &self,
        namespaces: &[String],
        pipeline: &str,
        stage: &str,
        excluding: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Page> {
        let excluding = &self.held(excluding).await?;
        let total = self
            .counted(namespaces, Some(pipeline), Some(stage), excluding)
            .await?;
        let objects: Vec<Value> = sqlx::query_scalar(concat!(
            "SELECT object ",
            of_stage!(),
            " ORDER BY ",
            newest_first!(),
            " LIMIT $5 OFFSET $6"
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(stage)
        .bind(excluding)
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .timed(&self.metrics, "read a stage's archived runs")
        .await?;
        let runs = objects.into_iter().map(decoded).collect::<Result<_>>()?;
        Ok(Page { runs, total })
    }

    /// Those of `uids` that the archive holds: all that an `excluding`
    /// list of a read has to name. A run is in the cluster and the archive
    /// at once only between its archiving and its deletion, so these are
    /// few however many runs the cluster has, and a read that scans many
    /// archived rows compares each with these few (a prepared statement's
    /// generic plan compares every row with every uid of the list it is
    /// given). One primary-key probe per uid.
    pub(crate) async fn held(&self, uids: &[String]) -> Result<Vec<String>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.migrate().await?;
        sqlx::query_scalar("SELECT uid FROM stage_runs WHERE uid = ANY($1::text[])")
            .bind(uids)
            .fetch_all(&self.pool)
            .timed(
                &self.metrics,
                "find which of the cluster's runs are archived",
            )
            .await
    }

    /// Those of a pipeline's `counters` (in `namespaces`, all when empty)
    /// that the archive has runs of: all that an `excluding` list of
    /// counters has to name, as [`Self::held`] for uids. One index probe per
    /// counter.
    pub(crate) async fn held_counters(
        &self,
        namespaces: &[String],
        pipeline: &str,
        counters: &[i64],
    ) -> Result<Vec<i64>> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        self.migrate().await?;
        sqlx::query_scalar(
            "SELECT DISTINCT pipeline_counter FROM stage_runs \
             WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
             AND pipeline = $2 AND pipeline_counter = ANY($3::bigint[])",
        )
        .bind(namespaces)
        .bind(pipeline)
        .bind(counters)
        .fetch_all(&self.pool)
        .timed(
            &self.metrics,
            "find which of the cluster's pipeline runs are archived",
        )
        .await
    }

    /// How many archived runs there are in `namespaces` (all when empty),
    /// of a pipeline and one of its stages when given, but for the uids in
    /// `excluding`: the stages' counts (`stage_run_counts`, kept by the
    /// database) less those of `excluding` that are archived, so that the
    /// cost follows the number of stages, not of runs.
    pub(crate) async fn counted(
        &self,
        namespaces: &[String],
        pipeline: Option<&str>,
        stage: Option<&str>,
        excluding: &[String],
    ) -> Result<i64> {
        self.migrate().await?;
        sqlx::query_scalar(
            "SELECT (SELECT COALESCE(SUM(runs), 0)::bigint FROM stage_run_counts \
               WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
               AND ($2::text IS NULL OR pipeline = $2) AND ($3::text IS NULL OR stage = $3)) \
             - (SELECT COUNT(*) FROM stage_runs WHERE uid = ANY($4::text[]) \
               AND (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
               AND ($2::text IS NULL OR pipeline = $2) AND ($3::text IS NULL OR stage = $3))",
        )
        .bind(namespaces)
        .bind(pipeline)
        .bind(stage)
        .bind(excluding)
        .fetch_one(&self.pool)
        .timed(&self.metrics, "count archived runs")
        .await
    }

    /// Archived runs of a pipeline's stage (as [`Self::stage_history`]
    /// selects them) paged by stage id, GoCD's cursor: the `limit` nearest
    /// ids on `window`'s side, newest first, and the newest and oldest ids
    /// of all, which tell whether pages lie beyond.
    pub async fn stage_ids(
        &self,
        namespaces: &[String],
        pipeline: &str,
        stage: &str,
        excluding: &[String],
        window: IdWindow,
        limit: i64,
    ) -> Result<IdPage> {
        self.migrate().await?;
        let excluding = &self.held(excluding).await?;
        let (newest, oldest): (Option<i64>, Option<i64>) =
            sqlx::query_as(concat!("SELECT MAX(id), MIN(id) ", of_stage!()))
                .bind(namespaces)
                .bind(pipeline)
                .bind(stage)
                .bind(excluding)
                .fetch_one(&self.pool)
                .timed(&self.metrics, "read the range of a stage's archived ids")
                .await?;
        let (id, sql) = match window {
            IdWindow::Below(id) => (
                id,
                concat!(
                    "SELECT object ",
                    of_stage!(),
                    " AND id < $5 ORDER BY id DESC LIMIT $6"
                ),
            ),
            IdWindow::Above(id) => (
                id,
                concat!(
                    "SELECT object ",
                    of_stage!(),
                    " AND id > $5 ORDER BY id ASC LIMIT $6"
                ),
            ),
        };
        let objects: Vec<Value> = sqlx::query_scalar(sql)
            .bind(namespaces)
            .bind(pipeline)
            .bind(stage)
            .bind(excluding)
            .bind(id)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .timed(
                &self.metrics,
                "read a page of a stage's archived runs by id",
            )
            .await?;
        let mut runs: Vec<StageRun> = objects.into_iter().map(decoded).collect::<Result<_>>()?;
        if matches!(window, IdWindow::Above(_)) {
            runs.reverse();
        }
        Ok(IdPage {
            runs,
            newest,
            oldest,
        })
    }

    /// The archived run of this uid (a Cloud Foundry task guid, a Studio
    /// package id).
    pub async fn stage_run(&self, uid: &str) -> Result<Option<StageRun>> {
        self.object_by_uid("SELECT object FROM stage_runs WHERE uid = $1", uid)
            .await
    }

    /// The archived CancelRequest of this uid.
    pub async fn cancel_request(&self, uid: &str) -> Result<Option<CancelRequest>> {
        self.object_by_uid("SELECT object FROM cancel_requests WHERE uid = $1", uid)
            .await
    }

    /// The object `query` (fixed text, the uid its one parameter) finds.
    async fn object_by_uid<T: serde::de::DeserializeOwned>(
        &self,
        query: &'static str,
        uid: &str,
    ) -> Result<Option<T>> {
        self.migrate().await?;
        let object: Option<Value> = sqlx::query_scalar(query)
            .bind(uid)
            .fetch_optional(&self.pool)
            .timed(&self.metrics, "read an archived object")
            .await?;
        object.map(decoded).transpose()
    }
}

/// A run's row.
struct RunRow {
    uid: String,
    namespace: String,
    name: String,
    pipeline: String,
    pipeline_counter: i64,
    stage: String,
    stage_counter: i64,
    id: Option<i64>,
    max_job_id: Option<i64>,
    phase: String,
    result: Option<String>,
    created_at: Option<String>,
    completion_time: Option<String>,
    /// `status.startTime`, else the creation time: when CodeArts counts the
    /// run as started (`sidecar::codearts::started`).
    start_time: Option<String>,
    labels: Value,
    object: Value,
}

impl RunRow {
    fn of(run: &StageRun) -> Result<Self> {
        let status = run.status.as_ref();
        Ok(RunRow {
            uid: run.uid().ok_or(Error::MissingField("uid"))?,
            namespace: run.namespace().ok_or(Error::MissingField("namespace"))?,
            name: run.name_any(),
            pipeline: run.spec.pipeline.clone(),
            pipeline_counter: run.spec.pipeline_counter,
            stage: run.spec.stage.clone(),
            stage_counter: run.spec.stage_counter,
            id: status.and_then(|s| s.id),
            max_job_id: status.and_then(|s| s.jobs.iter().map(|j| j.id).max()),
            phase: status
                .and_then(|s| word(&s.phase))
                .ok_or(Error::MissingField("status.phase"))?,
            result: status.and_then(|s| word(&s.result)),
            created_at: (run.metadata.creation_timestamp.as_ref()).map(|t| t.0.to_string()),
            completion_time: (status.and_then(|s| s.completion_time.as_ref()))
                .map(|t| t.0.to_string()),
            start_time: (status.and_then(|s| s.start_time.as_ref()))
                .or(run.metadata.creation_timestamp.as_ref())
                .map(|t| t.0.to_string()),
            labels: json!(run.labels()),
            object: object_of(&trimmed_run(run))?,
        })
    }
}

/// Rows as columns, one array per column, for `UNNEST`.
#[derive(Default)]
struct RunColumns {
    uid: Vec<String>,
    namespace: Vec<String>,
    name: Vec<String>,
    pipeline: Vec<String>,
    pipeline_counter: Vec<i64>,
    stage: Vec<String>,
    stage_counter: Vec<i64>,
    id: Vec<Option<i64>>,
    max_job_id: Vec<Option<i64>>,
    phase: Vec<String>,
    result: Vec<Option<String>>,
    created_at: Vec<Option<String>>,
    completion_time: Vec<Option<String>>,
    labels: Vec<Value>,
    object: Vec<Value>,
    start_time: Vec<Option<String>>,
}

impl RunColumns {
    fn of(rows: Vec<RunRow>) -> Self {
        let mut c = RunColumns::default();
        for r in rows {
            c.uid.push(r.uid);
            c.namespace.push(r.namespace);
            c.name.push(r.name);
            c.pipeline.push(r.pipeline);
            c.pipeline_counter.push(r.pipeline_counter);
            c.stage.push(r.stage);
            c.stage_counter.push(r.stage_counter);
            c.id.push(r.id);
            c.max_job_id.push(r.max_job_id);
            c.phase.push(r.phase);
            c.result.push(r.result);
            c.created_at.push(r.created_at);
            c.completion_time.push(r.completion_time);
            c.labels.push(r.labels);
            c.object.push(r.object);
            c.start_time.push(r.start_time);
        }
        c
    }
}

/// An enum's name as its JSON spells it (`Succeeded`, `Cancelled`).
fn word<T: Serialize>(value: &Option<T>) -> Option<String> {
    match serde_json::to_value(value.as_ref()?) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn object_of<T: Serialize>(obj: &T) -> Result<Value> {
    serde_json::to_value(obj).map_err(|e| Error::Archive {
        step: "encode an object",
        source: sqlx::Error::Encode(Box::new(e)),
    })
}

fn decoded<T: serde::de::DeserializeOwned>(object: Value) -> Result<T> {
    serde_json::from_value(object).map_err(|e| Error::Archive {
        step: "decode an archived object",
        source: sqlx::Error::Decode(Box::new(e)),
    })
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What of a container the reads show (a Cloud Foundry task's command and
/// resources): the rest of a pod template is the cluster's business.
const CONTAINER_FIELDS: [&str; 5] = ["name", "image", "command", "args", "resources"];

/// A run as the archive keeps it: without managedFields, kubectl's copy of
/// the last applied object, owners and finalizers (it has left the cluster),
/// and without its pod templates but for the first job's first container,
/// trimmed to what the reads show.
pub fn trimmed_run(run: &StageRun) -> StageRun {
    trim_run(run.clone())
}

/// [`trimmed_run`], in place.
pub fn trim_run(mut run: StageRun) -> StageRun {
    trim_meta(&mut run.metadata);
    for (i, job) in run.spec.jobs.iter_mut().enumerate() {
        let kept = (i == 0)
            .then(|| job.template.pointer("/spec/containers/0"))
            .flatten()
            .and_then(Value::as_object)
            .map(|c| {
                (c.iter())
                    .filter(|(k, _)| CONTAINER_FIELDS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<serde_json::Map<_, _>>()
            });
        job.template = match kept {
            Some(container) => json!({"spec": {"containers": [container]}}),
            None => json!({}),
        };
    }
    for cleanup in &mut run.spec.cleanup {
        cleanup.job.template = json!({});
    }
    run
}

/// A CancelRequest as the archive keeps it.
pub fn trimmed_request(req: &CancelRequest) -> CancelRequest {
    let mut req = req.clone();
    trim_meta(&mut req.metadata);
    req
}

fn trim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> StageRun {
        serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": "foo-1-dev", "namespace": "ns", "uid": "u1",
                "labels": {"team": "a"},
                "annotations": {LAST_APPLIED: "{...}", "note": "kept"},
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "o"}]},
            "spec": {"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV",
                "jobs": [
                    {"name": "a", "template": {"metadata": {"annotations": {"big": "x"}},
                        "spec": {"volumes": [{"name": "v"}], "containers": [
                            {"name": "c", "image": "i", "command": ["rake"], "args": ["db:migrate"],
                             "env": [{"name": "SECRET", "value": "s"}],
                             "resources": {"requests": {"memory": "256Mi"}}},
                            {"name": "d", "image": "j"}]}}},
                    {"name": "b", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}],
                "cleanup": [{"name": "z", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}]},
            "status": {"id": 7, "phase": "Failed", "result": "Cancelled",
                "failureReason": "task was cancelled",
                "completionTime": "2025-01-02T03:04:05Z",
                "jobs": [{"name": "a", "id": 11, "state": "Completed", "result": "Cancelled"},
                         {"name": "b", "id": 12, "state": "Completed", "result": "Cancelled"}]}
        }))
        .expect("stagerun")
    }

    #[test]
    fn an_archived_run_keeps_what_reads_show_and_no_pod_template() {
        let t = trimmed_run(&run());
        assert!(t.metadata.managed_fields.is_none());
        assert!(t.metadata.owner_references.is_none());
        assert_eq!(
            t.annotations().get("note").map(String::as_str),
            Some("kept")
        );
        assert!(!t.annotations().contains_key(LAST_APPLIED));
        assert_eq!(t.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            t.spec.jobs[0].template,
            json!({"spec": {"containers": [{"name": "c", "image": "i", "command": ["rake"],
                "args": ["db:migrate"], "resources": {"requests": {"memory": "256Mi"}}}]}})
        );
        assert_eq!(t.spec.jobs[1].template, json!({}));
        assert_eq!(t.spec.cleanup[0].job.template, json!({}));
        // The status whole: every read renders from it.
        assert_eq!(t.status, run().status);
        // And it reads back as it was stored.
        let stored = object_of(&t).expect("encode");
        let back: StageRun = decoded(stored.clone()).expect("decode");
        assert_eq!(object_of(&back).expect("encode"), stored);
    }

    #[test]
    fn a_row_carries_the_ids_and_outcome() {
        let row = RunRow::of(&run()).expect("row");
        assert_eq!((row.id, row.max_job_id), (Some(7), Some(12)));
        assert_eq!(row.phase, "Failed");
        assert_eq!(row.result.as_deref(), Some("Cancelled"));
        assert_eq!(row.completion_time.as_deref(), Some("2025-01-02T03:04:05Z"));
        // Not started: counted from its creation.
        assert_eq!(row.start_time, None);
        let mut created = run();
        created.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2025-01-02T03:00:00Z".parse().expect("time"),
            ));
        let row = RunRow::of(&created).expect("row");
        assert_eq!(row.start_time.as_deref(), Some("2025-01-02T03:00:00Z"));
        if let Some(s) = created.status.as_mut() {
            s.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2025-01-02T03:00:07Z".parse().expect("time"),
            ));
        }
        let row = RunRow::of(&created).expect("row");
        assert_eq!(row.start_time.as_deref(), Some("2025-01-02T03:00:07Z"));
        let mut unfinished = run();
        unfinished.status = None;
        assert!(RunRow::of(&unfinished).is_err());
    }
}
