//! History that lasts (issue 18): finished runs in the archive (PostgreSQL),
//! measured at users' scale on the benchmark's own control plane and its
//! PostgreSQL (`postgres.url` in the control plane's directory).
//!
//! It runs last, after every other figure, in the benchmark's namespace
//! emptied of what came before, with a controller and a REST API of its own,
//! both given the archive's URL as the chart gives it
//! (`CANCEL_OPERATOR_ARCHIVE_URL`):
//!
//! 1. setup: 100·N finished StageRuns written straight into the archive
//!    (`Archive::archive_stage_runs`, in batches), 3 in 10 of them one
//!    pipeline's stage with a deep history, the rest over 20 pipelines of two
//!    stages; N finished StageRuns retained in the cluster (the controller
//!    keeps finished runs an hour); N running (kwok pods);
//! 2. the peak RSS of both processes over the setup and the reads;
//! 3. history reads answered from the archive beside the same reads of a
//!    history still in the cluster (the REST API's cache), interleaved;
//! 4. throughput: a controller that keeps finished runs 1 s, until every
//!    finished run has left the cluster, and the archive holds them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use cancel_operator::archive::Archive;
use cancel_operator::crd::StageRun;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::k8s::{self, bounded, gone_ok, retry};
use crate::procs::{self, Process};
use crate::report::{Measured, Report, mib, ms, percentile, secs};
use crate::workload::{self, SET};
use crate::{Bench, NS, Ready, Settings, ready_row};

/// Sets (label `bench.cancel.dev/set`) of this section.
const ARCHIVED: &str = "archive";
const RETAINED: &str = "retained";
const RUNNING: &str = "archive-running";
const THROUGHPUT: &str = "throughput";
/// The pipeline whose stage `build` has a deep archived history.
const DEEP: &str = "deep";
/// The pipeline of the retained runs: a history still in the cluster.
const CACHED: &str = "cached";
/// Label naming an archived run's pipeline.
const PIPELINE: &str = "bench.cancel.dev/pipeline";
/// Runs per archive transaction, and transactions at once.
const BATCH: usize = 500;
const WRITERS: usize = 4;
/// GETs per figure (after 10 to warm up), archive and cache interleaved.
const READS: usize = 200;
/// Retention while memory and reads are measured (the retained runs stay),
/// and while throughput is (every finished run is due at once).
const KEEP_LONG: &str = "1h";
const KEEP_SHORT: &str = "1s";
/// Ids: the archive's oldest, below the retained runs', below those written
/// for the throughput (the controller floors its own above all of them).
const ARCHIVE_ID_BASE: i64 = 1_000;
const RETAINED_ID_BASE: i64 = 2_000_000_000;
const THROUGHPUT_ID_BASE: i64 = 2_100_000_000;

/// The section's outcome: its figures, or why it was not measured.
pub enum ArchiveSection {
    Skipped(String),
    Measured(Box<Figures>),
}

pub struct Figures {
    rows: usize,
    rows_stored: u64,
    rows_written: Duration,
    retained: usize,
    running: usize,
    start: Ready,
    controller_kib: u64,
    sidecar_kib: u64,
    reads: Vec<Read>,
    throughput: Throughput,
}

/// One read, from the archive and from the cache.
struct Read {
    what: String,
    archive: Vec<Duration>,
    cache: Vec<Duration>,
    /// Whether the archive's answer was the archived history (else the
    /// figure is not the archive's, and its targets are not measured).
    from_archive: bool,
    /// What the answers showed that the figure should be read with.
    note: Option<String>,
}

struct Throughput {
    /// Finished runs in the cluster when the controller started.
    runs: usize,
    /// Of which written for this figure, and how long writing them took.
    written: usize,
    write_time: Duration,
    /// From the controller's start until the first has left the cluster,
    /// and until none is left.
    first: Measured,
    moved: Measured,
    /// How many of them the archive holds afterwards.
    archived: i64,
}

/// Runs of the deep pipeline among the first `rows` archived.
fn deep_runs(rows: usize) -> usize {
    rows / 10 * 3 + (rows % 10).min(3)
}

/// Where archived run `i` belongs: (pipeline, pipeline counter, stage).
fn archived_place(i: usize) -> (String, usize, &'static str) {
    let (tens, unit) = (i / 10, i % 10);
    if unit < 3 {
        return (DEEP.to_string(), tens * 3 + unit + 1, "build");
    }
    let j = tens * 7 + unit - 3;
    let round = j / 20;
    (
        format!("archive-{}", j % 20),
        round / 2 + 1,
        ["build", "test"][round % 2],
    )
}

/// The status the controller leaves on a finished run (as the bulk
/// figures' history), cancelled ones by a request named after `i`.
fn finished_status(i: usize, id: i64, name: &str, started: Timestamp, done: Timestamp) -> Value {
    let (started, done) = (started.to_string(), done.to_string());
    workload::finished_status(i, id, name, (&started, &done), &format!("cancel-{i}"))
}

/// Archived run `i` of `rows`, as it left the cluster: one every 30 s
/// before `now` (the oldest first), each taking a minute.
fn archived_run(i: usize, rows: usize, now: Timestamp) -> Value {
    let (pipeline, counter, stage) = archived_place(i);
    let name = format!("{pipeline}-{counter}-{stage}");
    let created = now - SignedDuration::from_secs(30 * (rows - i) as i64 + 3600);
    let done = created + SignedDuration::from_secs(60);
    let mut sr = workload::stagerun(&name, ARCHIVED, &pipeline, counter, 2);
    sr["spec"]["stage"] = json!(stage);
    sr["metadata"] = json!({
        "name": name, "namespace": NS,
        "uid": format!("a7c4e000-0000-4000-8000-{i:012x}"),
        "creationTimestamp": created.to_string(),
        "labels": {SET: ARCHIVED, PIPELINE: pipeline}
    });
    sr["status"] = finished_status(i, ARCHIVE_ID_BASE + 3 * i as i64, &name, created, done);
    sr
}

/// Now, to the second (as the API server writes times).
fn now() -> anyhow::Result<Timestamp> {
    Ok(Timestamp::from_second(Timestamp::now().as_second())?)
}

/// Writes `rows` finished runs into the archive, `BATCH` per transaction,
/// `WRITERS` at once; returns the time it took and how many were new.
async fn write_archive(archive: &Archive, rows: usize) -> anyhow::Result<(Duration, u64)> {
    let now = now()?;
    let stored = AtomicU64::new(0);
    let start = Instant::now();
    bounded((0..rows.div_ceil(BATCH)).collect(), WRITERS, |b: usize| {
        let stored = &stored;
        async move {
            let runs = (b * BATCH..rows.min((b + 1) * BATCH))
                .map(|i| {
                    serde_json::from_value::<StageRun>(archived_run(i, rows, now))
                        .context("build an archived StageRun")
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = archive
                .archive_stage_runs(&runs)
                .await
                .context("archive a batch of StageRuns")?;
            stored.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    Ok((start.elapsed(), stored.into_inner()))
}

/// How many runs of `pipeline`'s stage `build` the archive holds.
async fn archived_total(archive: &Archive, pipeline: &str) -> anyhow::Result<i64> {
    Ok(archive
        .stage_history(&[NS.to_string()], pipeline, "build", &[], 0, 0)
        .await
        .with_context(|| format!("count the archived runs of {pipeline}"))?
        .total)
}

impl Bench {
    /// The section, unless BENCH_HISTORY_ARCHIVE=0 or the control plane has
    /// no PostgreSQL.
    pub async fn history_archive(&mut self) -> anyhow::Result<ArchiveSection> {
        if !self.settings.history_archive {
            return Ok(ArchiveSection::Skipped(
                "skipped (BENCH_HISTORY_ARCHIVE=0)".into(),
            ));
        }
        let path = self.cluster.dir.join("postgres.url");
        let db = match std::fs::read_to_string(&path) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                return Ok(ArchiveSection::Skipped(format!(
                    "not measured: the control plane has no PostgreSQL ({} missing)",
                    path.display()
                )));
            }
        };
        let figures = self.archive_section(&db).await?;
        Ok(ArchiveSection::Measured(Box::new(figures)))
    }

    async fn archive_section(&mut self, db: &str) -> anyhow::Result<Figures> {
        let n = self.settings.scale;
        let rows = self.settings.archive_rows;
        let env = vec![("CANCEL_OPERATOR_ARCHIVE_URL".to_string(), db.to_string())];
        eprintln!("bench: history archive: emptying namespace {NS}");
        self.empty_namespace().await?;

        eprintln!("bench: writing {rows} finished StageRuns to the archive");
        let archive = Archive::connect(db, WRITERS as u32).context("connect to the archive")?;
        let (rows_written, rows_stored) = write_archive(&archive, rows).await?;
        eprintln!(
            "bench: {rows_stored} archived StageRuns written in {:.1} s",
            rows_written.as_secs_f64()
        );
        self.create_finished(RETAINED, CACHED, n, RETAINED_ID_BASE)
            .await?;

        self.start_archive_sidecar(&env).await?;
        let start = self
            .start_controller_with(&["--keep-finished".into(), KEEP_LONG.into()], &env)
            .await?;
        let (_, pods) = self.create_set(RUNNING, n, 2).await?;
        if let Err(e) = pods {
            bail!("the running StageRuns of the archive section never ran: {e}");
        }
        let reads = self.archive_reads(rows, n).await?;
        self.check_processes()?;
        let controller_kib = self.controller.as_ref().map_or(0, |c| c.peak_kib());
        let sidecar_kib = self.sidecar.as_ref().map_or(0, |s| s.peak_kib());
        eprintln!(
            "bench: archive section peak RSS: controller {}, REST API {}",
            mib(controller_kib),
            mib(sidecar_kib)
        );
        // Not stop_controller: these processes are not the run's controller
        // peak, which the figures above report.
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }

        let throughput = self.archive_throughput(&archive, &env).await?;
        self.check_processes()?;
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
        if let Some(s) = self.sidecar.take() {
            s.stop().await;
        }
        Ok(Figures {
            rows,
            rows_stored,
            rows_written,
            retained: n,
            running: n,
            start,
            controller_kib,
            sidecar_kib,
            reads,
            throughput,
        })
    }

    /// Deletes what the figures before left in the namespace (history and
    /// finished runs, CancelRequests), with no controller running.
    async fn empty_namespace(&self) -> anyhow::Result<()> {
        // One by one, many in flight: one collection delete of 10,000 runs
        // would outlast the API server's request timeout.
        let names: Vec<String> = self.run_view.snapshot(|m| m.keys().cloned().collect());
        let runs = self.runs.clone();
        bounded(names, self.settings.concurrency, |name| {
            let runs = runs.clone();
            async move {
                retry("delete a StageRun", || async {
                    gone_ok(runs.delete(&name, &DeleteParams::background()).await)
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        k8s::delete_all(&self.runs, "", &DeleteParams::background()).await?;
        k8s::delete_all(&self.requests, "", &DeleteParams::background()).await?;
        self.run_view
            .until(
                &format!("the StageRuns of {NS} deleted"),
                self.settings.timeout,
                |m| (!m.is_empty()).then(|| format!("{} left", m.len())),
            )
            .await?;
        Ok(())
    }

    /// Creates `n` finished StageRuns of `set` (pipeline `pipeline`, stage
    /// `build`) through the API, status through the status subresource, as
    /// the bulk figures' history; returns how long until all are seen
    /// finished. No controller may run meanwhile (it would start them).
    async fn create_finished(
        &self,
        set: &str,
        pipeline: &str,
        n: usize,
        id_base: i64,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let done = now()?;
        let started = done - SignedDuration::from_secs(60);
        let runs = self.runs.clone();
        bounded((0..n).collect(), self.settings.concurrency, |i: usize| {
            let runs = runs.clone();
            let name = format!("{set}-{}", i + 1);
            let sr = workload::stagerun(&name, set, pipeline, i + 1, 2);
            let status = json!({
                "status": finished_status(i, id_base + 3 * i as i64, &name, started, done)
            });
            async move {
                let obj: DynamicObject = serde_json::from_value(sr)?;
                retry("create a finished StageRun", || async {
                    runs.create(&PostParams::default(), &obj).await
                })
                .await?;
                retry("write a finished status", || async {
                    runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        self.run_view
            .until(
                &format!("{n} finished StageRuns of {set}"),
                self.settings.timeout,
                |m| {
                    let finished = (m.values())
                        .filter(|r| {
                            r.set == set && matches!(r.phase.as_str(), "Succeeded" | "Failed")
                        })
                        .count();
                    (finished != n).then(|| format!("{finished} of {n} finished"))
                },
            )
            .await?;
        let took = start.elapsed();
        eprintln!(
            "bench: {n} finished StageRuns of {set} written in {:.1} s",
            took.as_secs_f64()
        );
        Ok(took)
    }

    /// A REST API serving the namespace, reading the archive too.
    async fn start_archive_sidecar(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        let port = procs::free_port()?;
        self.sidecar_url = format!("http://127.0.0.1:{port}");
        let mut sidecar = Process::spawn_with_env(
            "sidecar-archive",
            &self.bin,
            &[
                "sidecar".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--namespace".into(),
                NS.into(),
            ],
            env,
            &self.cluster.kubeconfig(),
            self.log_path("sidecar-archive"),
        )?;
        procs::wait_http_ok(
            &self.http,
            &format!("{}/readyz", self.sidecar_url),
            &mut sidecar,
            Duration::from_secs(120),
        )
        .await?;
        self.sidecar = Some(sidecar);
        Ok(())
    }

    /// One GET as the `operator` user; fails unless it answers 200. `path`
    /// is the sidecar's, or a whole URL (a page link it answered).
    async fn timed_get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<(Duration, bytes::Bytes)> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.sidecar_url)
        };
        let start = Instant::now();
        let mut req = self.http.get(&url).bearer_auth(&self.token);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!(
                "GET {url}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok((took, body))
    }

    async fn get_json(&self, path: &str, accept: Option<&str>) -> anyhow::Result<Value> {
        let (_, body) = self.timed_get(path, accept).await?;
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// The same read of the archive and of the cache, interleaved, after
    /// 10 of each to warm up.
    async fn sample(
        &self,
        what: String,
        archive: &str,
        cache: &str,
        accept: Option<&str>,
        from_archive: bool,
        note: Option<String>,
    ) -> anyhow::Result<Read> {
        for _ in 0..10 {
            self.timed_get(archive, accept).await?;
            self.timed_get(cache, accept).await?;
        }
        let (mut a, mut c) = (Vec::with_capacity(READS), Vec::with_capacity(READS));
        for _ in 0..READS {
            a.push(self.timed_get(archive, accept).await?.0);
            c.push(self.timed_get(cache, accept).await?.0);
        }
        if let Some(n) = &note {
            eprintln!("bench: NOTE {what}: {n}");
        }
        eprintln!(
            "bench: {what}: archive p50 {}, cache p50 {}",
            percentile(&a, 50.0).map_or("—".into(), ms),
            percentile(&c, 50.0).map_or("—".into(), ms)
        );
        Ok(Read {
            what,
            archive: a,
            cache: c,
            from_archive,
            note,
        })
    }

    /// The history reads: GoCD's stage history (offset and cursor forms)
    /// and Cloud Foundry's task list, of the archive's deep stage and of the
    /// retained runs. Each answer is checked to be the history it stands for.
    async fn archive_reads(&self, rows: usize, retained: usize) -> anyhow::Result<Vec<Read>> {
        let deep = deep_runs(rows);
        let archived_history = |p: &str| format!("/go/api/stages/{DEEP}/build/history{p}");
        let cached_history = |p: &str| format!("/go/api/stages/{CACHED}/build/history{p}");
        let mut reads = Vec::new();

        // The seed's offset form, first page and a page further in.
        let deeper = retained / 2 / 10 * 10;
        let offsets = if deeper > 0 { vec![0, deeper] } else { vec![0] };
        for offset in offsets {
            let (a, c) = (
                archived_history(&format!("/{offset}")),
                cached_history(&format!("/{offset}")),
            );
            let (av, cv) = (
                self.get_json(&a, None).await?,
                self.get_json(&c, None).await?,
            );
            let mut notes = Vec::new();
            let total = |v: &Value| v["pagination"]["total"].as_i64().unwrap_or(-1);
            if total(&av) != deep as i64 {
                notes.push(format!(
                    "the archive's page says total {} (archived: {deep})",
                    total(&av)
                ));
            }
            if total(&cv) != retained as i64 {
                notes.push(format!(
                    "the cache's page says total {} (retained: {retained})",
                    total(&cv)
                ));
            }
            let what = format!("GoCD stage history, offset form, offset {offset}");
            let from_archive = total(&av) == deep as i64;
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            reads.push(self.sample(what, &a, &c, None, from_archive, note).await?);
        }

        // The current cursor form (v3), first page and the next.
        let v3 = Some("application/vnd.go.cd.v3+json");
        let (a, c) = (archived_history(""), cached_history(""));
        let (av, cv) = (self.get_json(&a, v3).await?, self.get_json(&c, v3).await?);
        let first_of = |v: &Value| v["stages"][0]["pipeline_name"].as_str().map(String::from);
        let mut notes = Vec::new();
        if first_of(&av).as_deref() != Some(DEEP) {
            notes.push(format!(
                "the archive's page starts with {:?}",
                first_of(&av)
            ));
        }
        if first_of(&cv).as_deref() != Some(CACHED) {
            notes.push(format!("the cache's page starts with {:?}", first_of(&cv)));
        }
        // The deep stage has no run in the cluster: its stages are archived ones.
        let from_archive = first_of(&av).as_deref() == Some(DEEP);
        reads.push(
            self.sample(
                "GoCD stage history, cursor form (v3), first page".into(),
                &a,
                &c,
                v3,
                from_archive,
                (!notes.is_empty()).then(|| notes.join("; ")),
            )
            .await?,
        );
        let next = |v: &Value| v["_links"]["next"]["href"].as_str().map(String::from);
        match (next(&av), next(&cv)) {
            (Some(a), Some(c)) => reads.push(
                self.sample(
                    "GoCD stage history, cursor form (v3), next page".into(),
                    &a,
                    &c,
                    v3,
                    from_archive,
                    None,
                )
                .await?,
            ),
            (a, c) => {
                eprintln!("bench: NOTE no next cursor page to measure (archive {a:?}, cache {c:?})")
            }
        }

        // Cloud Foundry's task list, filtered by label, newest first.
        let list = |set: &str| {
            format!("/v3/tasks?label_selector=bench.cancel.dev%2Fset%3D{set}&order_by=-created_at")
        };
        let (a, c) = (list(ARCHIVED), list(RETAINED));
        let (av, cv) = (
            self.get_json(&a, None).await?,
            self.get_json(&c, None).await?,
        );
        let results = |v: &Value| v["pagination"]["total_results"].as_i64().unwrap_or(-1);
        let mut notes = Vec::new();
        if results(&av) < rows as i64 {
            notes.push(format!(
                "NOT answered from the archive: total_results {} for {rows} archived tasks, so the figure is not the archive's",
                results(&av)
            ));
        }
        if results(&cv) != retained as i64 {
            notes.push(format!(
                "the cache's list says total_results {} (retained: {retained})",
                results(&cv)
            ));
        }
        reads.push(
            self.sample(
                "Cloud Foundry task list, label_selector, order_by=-created_at".into(),
                &a,
                &c,
                None,
                results(&av) >= rows as i64,
                (!notes.is_empty()).then(|| notes.join("; ")),
            )
            .await?,
        );
        Ok(reads)
    }

    /// Writes 2·N more finished runs with no controller running, then starts
    /// one that keeps finished runs 1 s: until none of the finished runs
    /// (those and the retained ones) is left in the cluster.
    async fn archive_throughput(
        &mut self,
        archive: &Archive,
        env: &[(String, String)],
    ) -> anyhow::Result<Throughput> {
        let written = 2 * self.settings.scale;
        let write_time = self
            .create_finished(THROUGHPUT, THROUGHPUT, written, THROUGHPUT_ID_BASE)
            .await?;
        let finished = |set: &str| set == THROUGHPUT || set == RETAINED;
        let runs = self
            .run_view
            .snapshot(|m| m.values().filter(|r| finished(r.set.as_str())).count());
        let before =
            archived_total(archive, THROUGHPUT).await? + archived_total(archive, CACHED).await?;
        eprintln!(
            "bench: archive throughput: {runs} finished StageRuns, keep-finished {KEEP_SHORT}"
        );
        let start = Instant::now();
        self.start_controller_with(&["--keep-finished".into(), KEEP_SHORT.into()], env)
            .await?;
        let first = self
            .run_view
            .until(
                "the first finished StageRun archived and deleted",
                self.settings.timeout,
                |m| {
                    let left = m.values().filter(|r| finished(r.set.as_str())).count();
                    (left == runs && runs > 0).then(|| format!("{left} of {runs} left"))
                },
            )
            .await
            .map(|t| t - start);
        let moved = self
            .run_view
            .until(
                &format!("{runs} finished StageRuns archived and deleted"),
                self.settings.timeout,
                |m| {
                    let left = m.values().filter(|r| finished(r.set.as_str())).count();
                    (left > 0).then(|| format!("{left} of {runs} left"))
                },
            )
            .await
            .map(|t| t - start);
        let archived = archived_total(archive, THROUGHPUT).await?
            + archived_total(archive, CACHED).await?
            - before;
        eprintln!(
            "bench: {runs} finished StageRuns archived ({archived} in the archive) and deleted: {}",
            secs(&moved)
        );
        Ok(Throughput {
            runs,
            first,
            written,
            write_time,
            moved,
            archived,
        })
    }
}

/// The header's line about this section.
pub fn scale_line(s: &Settings, section: &ArchiveSection) -> String {
    match section {
        ArchiveSection::Skipped(why) => why.clone(),
        ArchiveSection::Measured(f) => format!(
            "{} finished StageRuns in the archive ({} of one stage), {} retained in the cluster, {} running; {} more finished for the throughput",
            f.rows,
            deep_runs(f.rows),
            f.retained,
            f.running,
            2 * s.scale
        ),
    }
}

fn rate(runs: usize, m: &Measured) -> Option<f64> {
    m.as_ref()
        .ok()
        .filter(|d| d.as_secs_f64() > 0.0)
        .map(|d| runs as f64 / d.as_secs_f64())
}

fn over(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.as_secs_f64() > 0.0 => Some(a.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    }
}

fn show(d: Option<Duration>) -> String {
    d.map_or("—".into(), ms)
}

fn times(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// The section of the report.
pub fn report(r: &mut Report, s: &Settings, section: &ArchiveSection) {
    r.heading("History: the archive (PostgreSQL)");
    let f = match section {
        ArchiveSection::Skipped(why) => {
            r.para(&format!("Not measured: {why}."));
            return;
        }
        ArchiveSection::Measured(f) => f,
    };
    let t = &f.throughput;
    r.para(&format!(
        "Measured last, in the namespace emptied of the figures above, with a controller and a REST API of their own, both given the archive's URL (`CANCEL_OPERATOR_ARCHIVE_URL`), the controller `--keep-finished {KEEP_LONG}`. Setup: {rows} finished StageRuns (2 jobs each, ids, results, times, labels) written straight into the archive in transactions of {BATCH}, {WRITERS} at once, in {w:.1} s ({rate:.0} rows/s, {stored} new): {deep} of them one stage with a deep history (`{DEEP}`/`build`), the rest over 20 pipelines of two stages; {n} finished StageRuns retained in the cluster (pipeline `{CACHED}`); {n} running (2 kwok pods each), created once both processes ran.",
        rows = f.rows,
        w = f.rows_written.as_secs_f64(),
        rate = f.rows as f64 / f.rows_written.as_secs_f64().max(1e-9),
        stored = f.rows_stored,
        deep = deep_runs(f.rows),
        n = f.retained,
    ));
    r.table(
        &["start", "/healthz", "ready", "RSS", "VmHWM"],
        &[ready_row(
            &format!("controller, {} archived, {} retained", f.rows, f.retained),
            &f.start,
        )],
    );
    r.para(&format!(
        "Peak RSS (VmHWM) over the setup and the reads below: controller **{}**, REST API **{}** (target ≤ 64 MiB each).",
        mib(f.controller_kib),
        mib(f.sidecar_kib)
    ));

    r.para(&format!(
        "History reads from the archive beside the same read of a history still in the cluster (the retained runs, which the REST API answers from its watch cache; it still asks the archive, which holds none of them). {READS} GETs of each, one after the other, archive and cache interleaved, after 10 of each to warm up; as the `operator` token user."
    ));
    let rows: Vec<Vec<String>> = f
        .reads
        .iter()
        .map(|read| {
            let (a50, a99) = (
                percentile(&read.archive, 50.0),
                percentile(&read.archive, 99.0),
            );
            let (c50, c99) = (percentile(&read.cache, 50.0), percentile(&read.cache, 99.0));
            let what = if read.from_archive {
                read.what.clone()
            } else {
                format!("{} (not the archive's answer: see the notes)", read.what)
            };
            vec![
                what,
                show(a50),
                show(a99),
                show(c50),
                show(c99),
                times(over(a50, c50)),
                times(over(a99, c99)),
            ]
        })
        .collect();
    r.table(
        &[
            "",
            "archive p50",
            "archive p99",
            "cache p50",
            "cache p99",
            "p50 ÷ cache",
            "p99 ÷ cache",
        ],
        &rows,
    );
    let notes: Vec<String> = (f.reads.iter())
        .filter_map(|read| read.note.as_ref().map(|n| format!("- {}: {n}.", read.what)))
        .collect();
    if !notes.is_empty() {
        r.para(&format!("Notes on the answers:\n\n{}", notes.join("\n")));
    }

    r.para(&format!(
        "Archive throughput: {w} more finished StageRuns written to the cluster with no controller running, then a controller started with `--keep-finished {KEEP_SHORT}`: seconds from its start (and from the first run's deletion, which leaves out its start and the first batch) until none of the {runs} finished runs (those and the {n} retained) is left in the cluster; afterwards the archive holds {archived} of them. Beside it, writing the {w} runs to the cluster (create and status, {c} in flight).",
        w = t.written,
        runs = t.runs,
        n = f.retained,
        archived = t.archived,
        c = s.concurrency,
    ));
    let written: Measured = Ok(t.write_time);
    r.table(
        &["", "runs", "seconds", "runs/s"],
        &[
            vec![
                "archived and deleted, from the controller's start".into(),
                t.runs.to_string(),
                secs(&t.moved),
                rate(t.runs, &t.moved).map_or("—".into(), |v| format!("{v:.0}")),
            ],
            vec![
                "the same, from the first run's deletion".into(),
                t.runs.saturating_sub(1).to_string(),
                match (&t.moved, &t.first) {
                    (Ok(m), Ok(f)) => format!("{:.1} s", m.saturating_sub(*f).as_secs_f64()),
                    _ => "—".into(),
                },
                match (&t.moved, &t.first) {
                    (Ok(m), Ok(f)) => rate(t.runs.saturating_sub(1), &Ok(m.saturating_sub(*f)))
                        .map_or("—".into(), |v| format!("{v:.0}")),
                    _ => "—".into(),
                },
            ],
            vec![
                "baseline: written to the cluster".into(),
                t.written.to_string(),
                secs(&written),
                rate(t.written, &written).map_or("—".into(), |v| format!("{v:.0}")),
            ],
        ],
    );
    if t.archived != t.runs as i64 {
        r.para(&format!(
            "Note: the archive holds {} of the {} runs that left the cluster.",
            t.archived, t.runs
        ));
    }
}

/// The section's targets (issue 18).
pub fn targets(r: &mut Report, section: &ArchiveSection) {
    let ArchiveSection::Measured(f) = section else {
        return;
    };
    r.target(
        "archive: controller peak RSS",
        Some(f.controller_kib as f64 / 1024.0),
        64.0,
        " MiB",
    );
    r.target(
        "archive: REST API peak RSS",
        Some(f.sidecar_kib as f64 / 1024.0),
        64.0,
        " MiB",
    );
    for read in &f.reads {
        for p in [50.0, 99.0] {
            // A figure that is not the archive's answer is not measured.
            let ratio = (read.from_archive)
                .then(|| over(percentile(&read.archive, p), percentile(&read.cache, p)))
                .flatten();
            r.target(
                &format!("archive ÷ cache p{p:.0}, {}", read.what),
                ratio,
                3.0,
                "×",
            );
        }
    }
    let t = &f.throughput;
    r.target_at_least(
        "archive throughput (archived and deleted)",
        rate(t.runs, &t.moved),
        200.0,
        " runs/s",
    );
}
