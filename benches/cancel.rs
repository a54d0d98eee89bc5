//! The scale benchmark (`make bench`), against a control plane of its own.
//!
//! It drives the product only as a user would: the static binary of the image,
//! its `controller` and `sidecar` commands, the Kubernetes API and the REST API.
//! Every figure stands beside baselines measured in the same run, because the
//! machines are shared and noisy:
//!
//! - bulk cancel of N running StageRuns × 2 jobs (kwok pods), (a) one REST
//!   cancel each over 64 connections, (b) one selector CancelRequest; until all
//!   are Failed/Cancelled and no pod is left; with an empty namespace and with
//!   9·N finished StageRuns and N finished CancelRequests beside them;
//! - baselines: Kubernetes alone deleting the same 2·N Jobs (Background
//!   propagation, until no pod is left), and the floor: deleting those Jobs
//!   and their pods directly, 64 requests in flight;
//! - N new StageRuns to Running;
//! - the controller's peak RSS, and its RSS and time to ready at start;
//! - single cancel latency (REST, and a CancelRequest applied) beside one Job
//!   deletion;
//! - last, history that lasts (`history.rs`): 100·N finished StageRuns in the
//!   archive (PostgreSQL), N retained and N running; both processes' peak
//!   RSS, history reads from the archive beside the same reads from the
//!   cache, and how fast finished runs move to the archive.
//!
//! Settings come from the environment (see `Settings::from_env`).

#[path = "cancel/history.rs"]
mod history;
#[path = "cancel/k8s.rs"]
mod k8s;
#[path = "cancel/observe.rs"]
mod observe;
#[path = "cancel/procs.rs"]
mod procs;
#[path = "cancel/report.rs"]
mod report;
#[path = "cancel/workload.rs"]
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use k8s::{Cluster, bounded, gone_ok, retry};
use observe::{Observed, TimedOut, observe, observe_dynamic};
use procs::{Memory, Process};
use report::{Measured, Report, mib, ms, percentile, ratio, secs, show_ratio};
use workload::SET;

/// Namespaces of the benchmark (on its own control plane).
const NS: &str = "bench";
const NS_K8S: &str = "bench-k8s";
const NS_FLOOR: &str = "bench-floor";
const NS_JOBS: &str = "bench-job-latency";
const NS_PROBE: &str = "bench-probe";
const NS_STATE: &str = "bench-system";
/// What follows this line in BENCHMARKS.md is kept when a run rewrites it.
const NOTES_MARKER: &str = "<!-- notes: kept by make bench -->";

struct Settings {
    /// Running StageRuns per bulk cancel (BENCH_SCALE, default 1000).
    scale: usize,
    /// Finished StageRuns of the history (BENCH_HISTORY, default 9 × scale).
    history: usize,
    /// Finished CancelRequests of the history (BENCH_HISTORY_REQUESTS, default scale).
    history_requests: usize,
    /// Requests in flight (BENCH_CONCURRENCY, default 64).
    concurrency: usize,
    /// Single cancels per latency figure (BENCH_SAMPLES, default scale/10 in 20..=100).
    samples: usize,
    /// Deadline of each wait (BENCH_TIMEOUT_SECONDS, default max(300, 0.6 s × scale)).
    timeout: Duration,
    /// Extra controller flags (BENCH_CONTROLLER_ARGS, split on whitespace).
    controller_args: Vec<String>,
    /// Whether the history-archive section runs (BENCH_HISTORY_ARCHIVE, default 1; 0 skips it).
    history_archive: bool,
    /// Only the history-archive section runs, and its report is printed, not
    /// written (BENCH_HISTORY_ARCHIVE=only).
    archive_only: bool,
    /// Finished StageRuns written to the archive (BENCH_ARCHIVE_ROWS, default 100 × scale).
    archive_rows: usize,
    /// Where the report goes besides stdout (BENCH_OUT, default BENCHMARKS.md; empty: nowhere).
    out: Option<PathBuf>,
    /// The command line to print in the report (BENCH_COMMAND).
    command: String,
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a whole number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let scale = env_usize("BENCH_SCALE", 1000)?;
        if scale == 0 {
            bail!("BENCH_SCALE must be at least 1");
        }
        let out = match std::env::var("BENCH_OUT") {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(PathBuf::from(v)),
            Err(_) => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")),
        };
        let archive_only = std::env::var("BENCH_HISTORY_ARCHIVE").as_deref() == Ok("only");
        Ok(Settings {
            scale,
            history: env_usize("BENCH_HISTORY", 9 * scale)?,
            history_requests: env_usize("BENCH_HISTORY_REQUESTS", scale)?,
            concurrency: env_usize("BENCH_CONCURRENCY", 64)?.max(1),
            samples: env_usize("BENCH_SAMPLES", (scale / 10).clamp(20, 100))?.max(1),
            timeout: Duration::from_secs(env_usize(
                "BENCH_TIMEOUT_SECONDS",
                300.max(scale * 6 / 10),
            )? as u64),
            history_archive: archive_only || env_usize("BENCH_HISTORY_ARCHIVE", 1)? != 0,
            archive_only,
            archive_rows: env_usize("BENCH_ARCHIVE_ROWS", 100 * scale)?,
            controller_args: std::env::var("BENCH_CONTROLLER_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            out,
            command: std::env::var("BENCH_COMMAND")
                .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        })
    }
}

/// What the benchmark watches of a StageRun.
#[derive(Clone, Debug)]
struct RunView {
    uid: String,
    set: String,
    phase: String,
    result: String,
}

fn run_view(o: &DynamicObject) -> RunView {
    let status = o.data.get("status");
    let field = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    RunView {
        uid: o.uid().unwrap_or_default(),
        set: o.labels().get(SET).cloned().unwrap_or_default(),
        phase: field("phase"),
        result: field("result"),
    }
}

/// What the benchmark watches of a pod: its phase and whose it is.
#[derive(Clone, Debug)]
struct PodView {
    running: bool,
    /// StageRun uid label, or StageRun name annotation (either identifies it).
    run_uid: Option<String>,
    run_name: Option<String>,
    job: Option<String>,
}

fn pod_view(p: &Pod) -> PodView {
    PodView {
        running: p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        run_uid: p.labels().get(workload::STAGERUN_UID).cloned(),
        run_name: p.annotations().get("cancel.dev/stagerun").cloned(),
        job: p
            .labels()
            .get("batch.kubernetes.io/job-name")
            .or_else(|| p.labels().get("job-name"))
            .cloned(),
    }
}

impl PodView {
    fn of_run(&self, name: &str, uid: &str) -> bool {
        self.run_uid.as_deref() == Some(uid) || self.run_name.as_deref() == Some(name)
    }
}

/// The results of a bulk cancel.
struct Bulk {
    to_running: Measured,
    pods_running: Measured,
    cancel: Measured,
    /// REST only: until every call was answered, and the calls that failed.
    calls: Option<(Duration, usize)>,
}

struct Ready {
    healthz: Measured,
    ready: Measured,
    memory: Option<Memory>,
}

struct Bench {
    settings: Settings,
    cluster: Cluster,
    bin: PathBuf,
    http: reqwest::Client,
    runs: Api<DynamicObject>,
    requests: Api<DynamicObject>,
    run_view: Observed<RunView>,
    pod_view: Observed<PodView>,
    sidecar: Option<Process>,
    sidecar_url: String,
    token: String,
    controller: Option<Process>,
    controllers_started: usize,
    metrics_url: String,
    peak_kib: u64,
}

impl Bench {
    fn client(&self) -> Client {
        self.cluster.admin.clone()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.cluster.dir.join(format!("{name}.log"))
    }

    /// Starts a controller from the binary and measures its start:
    /// until /healthz answers, and until a StageRun created before it
    /// started is Running (it has caught up with what it found).
    async fn start_controller(&mut self) -> anyhow::Result<Ready> {
        self.start_controller_with(&[], &[]).await
    }

    /// [`Bench::start_controller`] with extra flags and environment.
    async fn start_controller_with(
        &mut self,
        extra_args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Ready> {
        self.controllers_started += 1;
        let n = self.controllers_started;
        let probes: Api<DynamicObject> =
            Api::namespaced_with(self.client(), NS_PROBE, &workload::stageruns());
        let probe = format!("probe-{n}");
        let obj: DynamicObject =
            serde_json::from_value(workload::stagerun(&probe, "probe", "probe", n, 1))?;
        retry("create the probe StageRun", || async {
            probes.create(&PostParams::default(), &obj).await
        })
        .await?;
        let probe_view = observe_dynamic(
            probes.clone(),
            watcher::Config::default().fields(&format!("metadata.name={probe}")),
            run_view,
        );
        let port = procs::free_port()?;
        self.metrics_url = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = [
            "controller",
            "--state-namespace",
            NS_STATE,
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.settings.controller_args.iter().cloned());
        args.extend(extra_args.iter().cloned());
        let mut process = Process::spawn_with_env(
            &format!("controller-{n}"),
            &self.bin,
            &args,
            env,
            &self.cluster.kubeconfig(),
            self.log_path(&format!("controller-{n}")),
        )?;
        let started = process.started;
        let healthz = procs::wait_http_ok(
            &self.http,
            &format!("{}/healthz", self.metrics_url),
            &mut process,
            self.settings.timeout,
        )
        .await
        .map(|t| t - started)
        .map_err(|e| TimedOut {
            what: "/healthz".into(),
            after: started.elapsed(),
            last: e.to_string(),
        });
        let ready = probe_view
            .until(
                "the probe StageRun to be Running",
                self.settings.timeout,
                |m| match m.get(&probe) {
                    Some(r) if r.phase == "Running" => None,
                    r => Some(format!("phase {:?}", r.map(|r| r.phase.clone()))),
                },
            )
            .await
            .map(|t| t - started);
        let memory = process.memory();
        process.check_alive()?;
        self.controller = Some(process);
        // The probe goes with its Job and pod (garbage collector), in a
        // namespace that no figure watches.
        retry("delete the probe", || async {
            probes.delete(&probe, &DeleteParams::background()).await
        })
        .await?;
        Ok(Ready {
            healthz,
            ready,
            memory,
        })
    }

    async fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            self.peak_kib = self.peak_kib.max(c.stop().await);
        }
    }

    fn check_processes(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.controller.as_mut() {
            c.check_alive()?;
        }
        if let Some(s) = self.sidecar.as_mut() {
            s.check_alive()?;
        }
        Ok(())
    }

    /// Creates `n` StageRuns of `set` (2 jobs each), and waits until they are
    /// Running and their pods too.
    async fn create_set(
        &mut self,
        set: &str,
        n: usize,
        jobs: usize,
    ) -> anyhow::Result<(Measured, Measured)> {
        let start = Instant::now();
        let runs = self.runs.clone();
        bounded((1..=n).collect(), self.settings.concurrency, |i| {
            let runs = runs.clone();
            let sr =
                workload::stagerun(&format!("{set}-{i}"), set, &format!("bench-{set}"), i, jobs);
            async move {
                let obj: DynamicObject = serde_json::from_value(sr)?;
                retry("create a StageRun", || async {
                    runs.create(&PostParams::default(), &obj).await
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        let timeout = self.settings.timeout;
        let to_running = self
            .run_view
            .until(&format!("{n} StageRuns of {set} Running"), timeout, |m| {
                let (total, running) = m
                    .values()
                    .filter(|r| r.set == set)
                    .fold((0, 0), |(t, r), v| {
                        (t + 1, r + usize::from(v.phase == "Running"))
                    });
                (total != n || running != n).then(|| format!("{running} of {n} Running"))
            })
            .await
            .map(|t| t - start);
        let (uids, names): (HashSet<String>, HashSet<String>) = self.run_view.snapshot(|m| {
            m.iter()
                .filter(|(_, r)| r.set == set)
                .map(|(k, r)| (r.uid.clone(), k.clone()))
                .unzip()
        });
        let pods_running = self
            .pod_view
            .until(
                &format!("{} pods of {set} running", n * jobs),
                timeout,
                |m| {
                    let running = m
                        .values()
                        .filter(|p| {
                            p.running
                                && (p.run_uid.as_ref().is_some_and(|u| uids.contains(u))
                                    || p.run_name.as_ref().is_some_and(|n| names.contains(n)))
                        })
                        .count();
                    (running != n * jobs).then(|| format!("{running} of {} running", n * jobs))
                },
            )
            .await
            .map(|t| t - start);
        self.check_processes()?;
        eprintln!(
            "bench: {n} StageRuns of {set}: Running {}, pods running {}",
            secs(&to_running),
            secs(&pods_running)
        );
        Ok((to_running, pods_running))
    }

    /// Waits until every StageRun of `set` is Failed and no pod is left in
    /// the namespace (only that set has pods there during a bulk cancel).
    async fn until_cancelled(&self, set: &str, start: Instant) -> Measured {
        let timeout = self.settings.timeout;
        let runs_done = self
            .run_view
            .until(
                &format!("the StageRuns of {set} Failed/Cancelled"),
                timeout,
                |m| {
                    let (total, failed) =
                        m.values()
                            .filter(|r| r.set == set)
                            .fold((0, 0), |(t, f), v| {
                                (
                                    t + 1,
                                    f + usize::from(v.phase == "Failed" && v.result == "Cancelled"),
                                )
                            });
                    (total == 0 || failed != total)
                        .then(|| format!("{failed} of {total} Failed/Cancelled"))
                },
            )
            .await?;
        let pods_gone = self
            .pod_view
            .until(
                "no pod left",
                timeout.saturating_sub(start.elapsed()),
                |m| (!m.is_empty()).then(|| format!("{} pods left", m.len())),
            )
            .await?;
        Ok(runs_done.max(pods_gone) - start)
    }

    /// Bulk (a): one Cloud Foundry cancel per StageRun, `concurrency` at once.
    async fn rest_cancel(&mut self, set: &str) -> anyhow::Result<(Measured, Duration, usize)> {
        let uids: Vec<String> = self.run_view.snapshot(|m| {
            m.values()
                .filter(|r| r.set == set)
                .map(|r| r.uid.clone())
                .collect()
        });
        let start = Instant::now();
        let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let http = self.http.clone();
        let base = self.sidecar_url.clone();
        let token = self.token.clone();
        let f = failures.clone();
        bounded(uids, self.settings.concurrency, move |uid| {
            let (http, base, token, f) = (http.clone(), base.clone(), token.clone(), f.clone());
            async move {
                if let Err(e) = cf_cancel(&http, &base, &token, &uid).await {
                    f.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.to_string());
                }
                Ok(())
            }
        })
        .await?;
        let calls = start.elapsed();
        let failed = failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(first) = failed.first() {
            eprintln!(
                "bench: {} REST cancels failed; the first: {first}",
                failed.len()
            );
        }
        let done = self.until_cancelled(set, start).await;
        Ok((done, calls, failed.len()))
    }

    /// Bulk (b): one CancelRequest selecting the whole set.
    async fn selector_cancel(&mut self, set: &str) -> anyhow::Result<Measured> {
        let cr: DynamicObject =
            serde_json::from_value(workload::selector_request(&format!("{set}-all"), set))?;
        let start = Instant::now();
        retry("create the selector CancelRequest", || async {
            self.requests.create(&PostParams::default(), &cr).await
        })
        .await?;
        Ok(self.until_cancelled(set, start).await)
    }

    /// After a measured cancel: removes the set's StageRuns and every
    /// CancelRequest that is not history, so that the next figure starts from
    /// the same namespace. After a timeout, it deletes what is left first.
    async fn clean(&mut self, set: &str, result: &Measured) -> anyhow::Result<()> {
        if result.is_err() {
            eprintln!("bench: removing what the timed-out cancel left");
            let jobs: Api<Job> = Api::namespaced(self.client(), NS);
            let pods: Api<Pod> = Api::namespaced(self.client(), NS);
            k8s::delete_all(&jobs, "", &DeleteParams::background()).await?;
            k8s::delete_all(&pods, "", &DeleteParams::default().grace_period(0)).await?;
        }
        k8s::delete_all(
            &self.runs,
            &format!("{SET}={set}"),
            &DeleteParams::background(),
        )
        .await?;
        k8s::delete_all(
            &self.requests,
            &format!("!{}", workload::HISTORY),
            &DeleteParams::background(),
        )
        .await?;
        self.run_view
            .until(
                &format!("the StageRuns of {set} deleted"),
                self.settings.timeout,
                |m| {
                    let left = m.values().filter(|r| r.set == set).count();
                    (left > 0).then(|| format!("{left} left"))
                },
            )
            .await?;
        self.pod_view
            .until("no pod left", self.settings.timeout, |m| {
                (!m.is_empty()).then(|| format!("{} pods left", m.len()))
            })
            .await?;
        Ok(())
    }

    async fn bulk(&mut self, label: &str, rest: bool) -> anyhow::Result<Bulk> {
        let set = format!("{label}-{}", if rest { "rest" } else { "selector" });
        let (to_running, pods_running) = self.create_set(&set, self.settings.scale, 2).await?;
        if let Err(e) = &pods_running {
            bail!("the StageRuns to cancel never ran: {e}");
        }
        let (cancel, calls) = if rest {
            let (m, d, f) = self.rest_cancel(&set).await?;
            (m, Some((d, f)))
        } else {
            (self.selector_cancel(&set).await?, None)
        };
        eprintln!("bench: bulk cancel of {set}: {}", secs(&cancel));
        self.check_processes()?;
        self.clean(&set, &cancel).await?;
        Ok(Bulk {
            to_running,
            pods_running,
            cancel,
            calls,
        })
    }

    /// Creates the namespace's history with no controller running (so that
    /// none of it is started): finished StageRuns and completed
    /// CancelRequests, their status written through the status subresource.
    async fn create_history(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let now = utc_now();
        let runs = self.runs.clone();
        let status = PatchParams::default();
        let uids = Arc::new(std::sync::Mutex::new(HashMap::<usize, String>::new()));
        let u = uids.clone();
        bounded(
            (0..self.settings.history).collect(),
            self.settings.concurrency,
            |i| {
                let (runs, status, u, now) = (runs.clone(), status.clone(), u.clone(), now.clone());
                async move {
                    let (name, sr) = workload::history_stagerun(i);
                    let obj: DynamicObject = serde_json::from_value(sr)?;
                    let created = retry("create a history StageRun", || async {
                        runs.create(&PostParams::default(), &obj).await
                    })
                    .await?;
                    let patch = workload::history_status(i, &now);
                    retry("write a history status", || async {
                        runs.patch_status(&name, &status, &Patch::Merge(&patch))
                            .await
                    })
                    .await?;
                    u.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(i, created.uid().unwrap_or_default());
                    Ok(())
                }
            },
        )
        .await?;
        let uids = uids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Requests target the cancelled runs of the history, round robin.
        let cancelled: Vec<usize> = (0..self.settings.history)
            .filter(|&i| workload::history_outcome(i).1 == "Cancelled")
            .collect();
        let requests = self.requests.clone();
        if !cancelled.is_empty() {
            bounded(
                (0..self.settings.history_requests).collect(),
                self.settings.concurrency,
                |k| {
                    let i = cancelled[k % cancelled.len()];
                    let target = workload::history_stagerun(i).0;
                    let uid = uids.get(&i).cloned().unwrap_or_default();
                    let (requests, status, now) = (requests.clone(), status.clone(), now.clone());
                    async move {
                        let (name, cr) = workload::history_request(k, &target);
                        let obj: DynamicObject = serde_json::from_value(cr)?;
                        retry("create a history CancelRequest", || async {
                            requests.create(&PostParams::default(), &obj).await
                        })
                        .await?;
                        let patch = workload::history_request_status(&target, &uid, &now);
                        retry("write a history request status", || async {
                            requests
                                .patch_status(&name, &status, &Patch::Merge(&patch))
                                .await
                        })
                        .await?;
                        Ok(())
                    }
                },
            )
            .await?;
        }
        let took = start.elapsed();
        eprintln!(
            "bench: history of {} StageRuns and {} CancelRequests written in {:.1} s",
            self.settings.history,
            self.settings.history_requests,
            took.as_secs_f64()
        );
        Ok(took)
    }

    /// Creates `n` bare Jobs in `ns` and waits until their pods run.
    async fn create_jobs(
        &self,
        ns: &str,
        n: usize,
    ) -> anyhow::Result<(Api<Job>, Observed<PodView>, Duration)> {
        k8s::create_namespace(&self.client(), ns).await?;
        let jobs: Api<Job> = Api::namespaced(self.client(), ns);
        let pods = observe(
            Api::<Pod>::namespaced(self.client(), ns),
            watcher::Config::default(),
            pod_view,
        );
        let start = Instant::now();
        let j = jobs.clone();
        bounded((0..n).collect(), self.settings.concurrency, |i| {
            let jobs = j.clone();
            async move {
                let job: Job =
                    serde_json::from_value(workload::job(&format!("job-{i}"), "baseline"))?;
                retry("create a Job", || async {
                    jobs.create(&PostParams::default(), &job).await
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        pods.until(
            &format!("{n} Job pods running"),
            self.settings.timeout,
            |m| {
                let running = m.values().filter(|p| p.running).count();
                (running != n).then(|| format!("{running} of {n} running"))
            },
        )
        .await?;
        Ok((jobs, pods, start.elapsed()))
    }

    /// Kubernetes alone: the Jobs deleted with Background propagation, until
    /// the garbage collector has removed every pod.
    async fn baseline_gc(&self, n: usize) -> anyhow::Result<(Measured, Duration)> {
        let (jobs, pods, setup) = self.create_jobs(NS_K8S, n).await?;
        let start = Instant::now();
        bounded((0..n).collect(), self.settings.concurrency, |i| {
            let jobs = jobs.clone();
            async move {
                let name = format!("job-{i}");
                retry("delete a Job", || async {
                    gone_ok(jobs.delete(&name, &DeleteParams::background()).await)
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        let done = pods
            .until("no pod left", self.settings.timeout, |m| {
                (!m.is_empty()).then(|| format!("{} pods left", m.len()))
            })
            .await
            .map(|t| t - start);
        eprintln!("bench: Kubernetes alone, {n} Jobs: {}", secs(&done));
        Ok((done, setup))
    }

    /// The floor: each Job deleted (Background, so nothing is orphaned) and
    /// its pods deleted directly, `concurrency` requests in flight.
    async fn baseline_floor(&self, n: usize) -> anyhow::Result<Measured> {
        let (jobs, pods, _) = self.create_jobs(NS_FLOOR, n).await?;
        let pods_api: Api<Pod> = Api::namespaced(self.client(), NS_FLOOR);
        let mut by_job: HashMap<String, Vec<String>> = pods.snapshot(|m| {
            let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
            for (name, p) in m {
                if let Some(job) = &p.job {
                    by_job.entry(job.clone()).or_default().push(name.clone());
                }
            }
            by_job
        });
        let work: Vec<(String, Vec<String>)> = (0..n)
            .map(|i| {
                let job = format!("job-{i}");
                let p = by_job.remove(&job).unwrap_or_default();
                (job, p)
            })
            .collect();
        let start = Instant::now();
        bounded(work, self.settings.concurrency, |(job, job_pods)| {
            let (jobs, pods_api) = (jobs.clone(), pods_api.clone());
            async move {
                retry("delete a Job", || async {
                    gone_ok(jobs.delete(&job, &DeleteParams::background()).await)
                })
                .await?;
                for pod in job_pods {
                    retry("delete a pod", || async {
                        gone_ok(pods_api.delete(&pod, &DeleteParams::default()).await)
                    })
                    .await?;
                }
                Ok(())
            }
        })
        .await?;
        let done = pods
            .until("no pod left", self.settings.timeout, |m| {
                (!m.is_empty()).then(|| format!("{} pods left", m.len()))
            })
            .await
            .map(|t| t - start);
        eprintln!("bench: floor, {n} Jobs and pods: {}", secs(&done));
        Ok(done)
    }

    /// Single cancels, one at a time: from the call to Canceling and to
    /// Failed (which the controller reports only once no pod is left).
    async fn single_cancels(
        &mut self,
        set: &str,
        rest: bool,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let runs: Vec<(String, String)> = self.run_view.snapshot(|m| {
            let mut v: Vec<(String, String)> = m
                .iter()
                .filter(|(_, r)| r.set == set)
                .map(|(k, r)| (k.clone(), r.uid.clone()))
                .collect();
            v.sort();
            v
        });
        let (mut to_canceling, mut to_failed) = (Vec::new(), Vec::new());
        for (name, uid) in runs {
            let start = Instant::now();
            if rest {
                cf_cancel(&self.http, &self.sidecar_url, &self.token, &uid).await?;
            } else {
                let cr = workload::single_request(&format!("{name}-cancel"), set, &name);
                retry("apply a CancelRequest", || async {
                    self.requests
                        .patch(
                            &format!("{name}-cancel"),
                            &PatchParams::apply("kubectl").force(),
                            &Patch::Apply(&cr),
                        )
                        .await
                })
                .await?;
            }
            let timeout = self.settings.timeout.min(Duration::from_secs(120));
            let canceling = self
                .run_view
                .until(&format!("{name} Canceling"), timeout, |m| {
                    match m.get(&name) {
                        Some(r) if r.phase == "Canceling" || r.phase == "Failed" => None,
                        r => Some(format!("phase {:?}", r.map(|r| r.phase.clone()))),
                    }
                })
                .await?;
            let failed = self
                .run_view
                .until(&format!("{name} Failed"), timeout, |m| match m.get(&name) {
                    Some(r) if r.phase == "Failed" => None,
                    r => Some(format!("phase {:?}", r.map(|r| r.phase.clone()))),
                })
                .await?;
            let no_pod = self
                .pod_view
                .until(&format!("no pod of {name}"), timeout, |m| {
                    let left = m.values().filter(|p| p.of_run(&name, &uid)).count();
                    (left > 0).then(|| format!("{left} pods left"))
                })
                .await?;
            to_canceling.push(canceling - start);
            to_failed.push(failed.max(no_pod) - start);
        }
        Ok((to_canceling, to_failed))
    }

    /// One Job deleted at a time (Background), until its pod is gone.
    async fn single_job_deletions(&self, n: usize) -> anyhow::Result<Vec<Duration>> {
        let (jobs, pods, _) = self.create_jobs(NS_JOBS, n).await?;
        let mut samples = Vec::new();
        for i in 0..n {
            let name = format!("job-{i}");
            let start = Instant::now();
            retry("delete a Job", || async {
                jobs.delete(&name, &DeleteParams::background()).await
            })
            .await?;
            let gone = pods
                .until(
                    &format!("no pod of {name}"),
                    Duration::from_secs(120),
                    |m| {
                        let left = m
                            .values()
                            .filter(|p| p.job.as_deref() == Some(name.as_str()))
                            .count();
                        (left > 0).then(|| format!("{left} pods left"))
                    },
                )
                .await?;
            samples.push(gone - start);
        }
        Ok(samples)
    }

    /// Mean latency of `rounds` sequential GETs (the sidecar's reads).
    async fn mean_get(&self, path: &str, auth: bool, rounds: u32) -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..rounds {
            let mut req = self.http.get(format!("{}{path}", self.sidecar_url));
            if auth {
                req = req.bearer_auth(&self.token);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                bail!("GET {path}: {}", resp.status());
            }
            resp.bytes().await?;
        }
        Ok(start.elapsed() / rounds)
    }
}

/// POST /v3/tasks/{uid}/actions/cancel; the sidecar's cache may not have seen
/// a StageRun created a moment ago, so a 404 is retried for a few seconds.
async fn cf_cancel(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    uid: &str,
) -> anyhow::Result<()> {
    let url = format!("{base}/v3/tasks/{uid}/actions/cancel");
    for _ in 0..50 {
        let resp = http.post(&url).bearer_auth(token).send().await?;
        match resp.status().as_u16() {
            202 => return Ok(()),
            404 => tokio::time::sleep(Duration::from_millis(100)).await,
            code => bail!(
                "POST {url}: {code} {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
    bail!("POST {url}: still 404 after 5 s")
}

/// The current time in RFC 3339 (UTC), as status fields carry it.
fn utc_now() -> String {
    command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// nproc, memory, kernel, CPU and load: the report says where it ran.
fn machine() -> Vec<Vec<String>> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = command_output("git", &["describe", "--always", "--dirty"]);
    vec![
        vec!["date".into(), utc_now()],
        vec!["nproc".into(), nproc.to_string()],
        vec![
            "memory".into(),
            format!("{:.1} GiB", mem_kib as f64 / 1048576.0),
        ],
        vec![
            "kernel".into(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ],
        vec!["CPU".into(), cpu],
        vec![
            "load average at start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ],
        vec!["commit".into(), commit],
    ]
}

fn ready_row(what: &str, r: &Ready) -> Vec<String> {
    vec![
        what.to_string(),
        secs(&r.healthz),
        secs(&r.ready),
        r.memory.map_or("—".into(), |m| mib(m.rss_kib)),
        r.memory.map_or("—".into(), |m| mib(m.hwm_kib)),
    ]
}

fn lat_row(what: &str, samples: &[Duration], baseline: Option<Duration>) -> Vec<String> {
    let p50 = percentile(samples, 50.0);
    let p99 = percentile(samples, 99.0);
    let r = |p: Option<Duration>| match (p, baseline) {
        (Some(p), Some(b)) if b.as_secs_f64() > 0.0 => {
            format!("{:.2}×", p.as_secs_f64() / b.as_secs_f64())
        }
        _ => "—".into(),
    };
    vec![
        what.to_string(),
        samples.len().to_string(),
        p50.map_or("—".into(), ms),
        p99.map_or("—".into(), ms),
        r(p50),
    ]
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let began = Instant::now();
    let cluster = Cluster::connect().await?;
    let client = cluster.admin.clone();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = match std::env::var_os("BENCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_cancel-operator")),
    };
    k8s::install_crds(&client, &root.join("crds/cancel.dev.yaml")).await?;
    for ns in [NS, NS_PROBE, NS_STATE] {
        k8s::create_namespace(&client, ns).await?;
    }
    // The REST caller: the static-token user `operator`, allowed to read
    // StageRuns and create CancelRequests in the benchmark's namespace.
    let rbac = json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "bench-operator", "namespace": NS},
         "rules": [
            {"apiGroups": ["cancel.dev"], "resources": ["stageruns"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["cancel.dev"], "resources": ["cancelrequests"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "bench-operator", "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench-operator"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "operator"}]}
    ]);
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), NS);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(rbac[0].clone())?,
        )
        .await
        .context("create the Role")?;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), NS);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(rbac[1].clone())?,
        )
        .await
        .context("create the RoleBinding")?;
    let token = std::fs::read_to_string(cluster.dir.join("operator.token"))
        .context("read the operator token")?
        .trim()
        .to_string();

    let runs: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &workload::stageruns());
    let requests: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &workload::cancelrequests());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut b = Bench {
        run_view: observe_dynamic(runs.clone(), watcher::Config::default(), run_view),
        pod_view: observe(
            Api::<Pod>::namespaced(client.clone(), NS),
            watcher::Config::default(),
            pod_view,
        ),
        runs,
        requests,
        settings,
        bin,
        http,
        sidecar: None,
        sidecar_url: String::new(),
        token,
        controller: None,
        controllers_started: 0,
        metrics_url: String::new(),
        peak_kib: 0,
        cluster,
    };
    let n = b.settings.scale;

    if b.settings.archive_only {
        let archive = b.history_archive().await?;
        let mut r = Report::default();
        history::report(&mut r, &b.settings, &archive);
        history::targets(&mut r, &archive);
        println!("{}", r.markdown());
        return Ok(());
    }

    // The REST sidecar, for the whole run.
    let port = procs::free_port()?;
    b.sidecar_url = format!("http://127.0.0.1:{port}");
    let mut sidecar = Process::spawn(
        "sidecar",
        &b.bin,
        &[
            "sidecar".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--namespace".into(),
            NS.into(),
        ],
        &b.cluster.kubeconfig(),
        b.log_path("sidecar"),
    )?;
    procs::wait_http_ok(
        &b.http,
        &format!("{}/readyz", b.sidecar_url),
        &mut sidecar,
        Duration::from_secs(120),
    )
    .await?;
    b.sidecar = Some(sidecar);

    // Empty history.
    eprintln!("bench: empty namespace, {n} running StageRuns");
    let start_empty = b.start_controller().await?;
    let empty_a = b.bulk("empty", true).await?;
    let empty_b = b.bulk("empty", false).await?;

    // Baselines, with the same 2·N Jobs.
    eprintln!("bench: baselines, {} Jobs", 2 * n);
    let (gc, jobs_setup) = b.baseline_gc(2 * n).await?;
    let floor = b.baseline_floor(2 * n).await?;
    b.stop_controller().await;

    // With history.
    eprintln!(
        "bench: history of {} finished StageRuns and {} CancelRequests",
        b.settings.history, b.settings.history_requests
    );
    let history_took = b.create_history().await?;
    let start_history = b.start_controller().await?;
    let (hist_running, hist_pods) = b.create_set("history-rest", n, 2).await?;
    if let Err(e) = &hist_pods {
        bail!("the StageRuns to cancel never ran: {e}");
    }
    // A restart with all of it present: history and N running StageRuns.
    b.stop_controller().await;
    let start_full = b.start_controller().await?;
    let (hist_rest, hist_calls, hist_failed) = b.rest_cancel("history-rest").await?;
    eprintln!("bench: bulk cancel of history-rest: {}", secs(&hist_rest));
    b.check_processes()?;
    b.clean("history-rest", &hist_rest).await?;
    let hist_a = Bulk {
        to_running: hist_running,
        pods_running: hist_pods,
        cancel: hist_rest,
        calls: Some((hist_calls, hist_failed)),
    };
    let hist_b = b.bulk("history", false).await?;

    // Single cancels, with history.
    let k = b.settings.samples;
    eprintln!("bench: single cancel latency, {k} samples each");
    b.create_set("latency-rest", k, 2)
        .await?
        .1
        .map_err(anyhow::Error::from)?;
    b.create_set("latency-apply", k, 2)
        .await?
        .1
        .map_err(anyhow::Error::from)?;
    let (rest_canceling, rest_failed) = b.single_cancels("latency-rest", true).await?;
    let (apply_canceling, apply_failed) = b.single_cancels("latency-apply", false).await?;
    let job_deletions = b.single_job_deletions(k).await?;

    // The sidecar's reads, beside its /healthz.
    let uid = b.run_view.snapshot(|m| {
        m.values()
            .find(|r| r.set == "latency-rest")
            .map(|r| r.uid.clone())
    });
    let rounds = 300;
    b.mean_get("/go/api/stages/history-0/build/history/0", true, 10)
        .await?;
    let healthz = b.mean_get("/healthz", false, rounds).await?;
    let gocd_history = b
        .mean_get("/go/api/stages/history-0/build/history/0", true, rounds)
        .await?;
    let task = match uid {
        Some(uid) => Some(
            b.mean_get(&format!("/v3/tasks/{uid}"), true, rounds)
                .await?,
        ),
        None => None,
    };
    b.check_processes()?;
    b.stop_controller().await;
    let sidecar_peak_kib = match b.sidecar.take() {
        Some(s) => s.stop().await,
        None => 0,
    };

    // History that lasts: last, so that the figures above are measured as
    // before (its controllers and REST API are processes of their own).
    let archive = b.history_archive().await?;
    let total = began.elapsed();

    // The report.
    let s = &b.settings;
    let mut r = Report::default();
    r.para("# Benchmarks\n\nWritten by `make bench` (`scripts/bench.sh`, `benches/cancel.rs`) from the run it describes. Every figure stands beside baselines measured in the same run, on a control plane of its own (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from `tests/cluster/`); the controller and the REST sidecar run from the static binary the container image ships (`make image`: musl, as in the Dockerfile), so that memory is measured as it runs in a cluster.");
    r.table(&["", ""], &[
        vec!["command".into(), format!("`{}`", s.command)],
        vec!["scale".into(), format!("{n} running StageRuns × 2 jobs; history {} finished StageRuns, {} finished CancelRequests; {} requests in flight; {} samples per latency", s.history, s.history_requests, s.concurrency, s.samples)],
        vec!["history archive".into(), history::scale_line(s, &archive)],
        vec!["controller flags".into(), if s.controller_args.is_empty() { "(defaults)".into() } else { format!("`{}`", s.controller_args.join(" ")) }],
        vec!["run time".into(), format!("{:.0} s", total.as_secs_f64())],
    ]);
    r.heading("Machine");
    r.table(&["", ""], &machine());

    r.heading(&format!("Bulk cancel: {n} running StageRuns × 2 jobs"));
    r.para(&format!("Seconds from the first cancel call until every StageRun is `Failed`/`Cancelled` and no pod is left. Baselines on the same {} Jobs: Kubernetes alone deletes them with Background propagation (the garbage collector removes the pods); the floor deletes each Job and its pod directly, {} requests in flight.", 2 * n, s.concurrency));
    let bulk_row = |what: &str, m: &Measured| {
        vec![
            what.to_string(),
            secs(m),
            show_ratio(ratio(m, &gc)),
            show_ratio(ratio(m, &floor)),
        ]
    };
    r.table(
        &["", "seconds", "÷ Kubernetes alone", "÷ floor"],
        &[
            bulk_row(
                &format!("(a) {n} REST cancels, empty history"),
                &empty_a.cancel,
            ),
            bulk_row(
                &format!("(a) {n} REST cancels, with history"),
                &hist_a.cancel,
            ),
            bulk_row(
                "(b) one selector CancelRequest, empty history",
                &empty_b.cancel,
            ),
            bulk_row(
                "(b) one selector CancelRequest, with history",
                &hist_b.cancel,
            ),
            vec![
                format!("baseline: Kubernetes alone, {} Jobs", 2 * n),
                secs(&gc),
                "1.00×".into(),
                show_ratio(ratio(&gc, &floor)),
            ],
            vec![
                format!("baseline: floor, {} Jobs and pods", 2 * n),
                secs(&floor),
                show_ratio(ratio(&floor, &gc)),
                "1.00×".into(),
            ],
        ],
    );
    let calls = |b: &Bulk| {
        b.calls.map_or("—".into(), |(d, f)| {
            format!("{:.1} s, {f} failed", d.as_secs_f64())
        })
    };
    r.para(&format!(
        "REST calls all answered: {} (empty history), {} (with history).",
        calls(&empty_a),
        calls(&hist_a)
    ));

    r.heading(&format!("{n} new StageRuns to Running"));
    r.para(&format!("Seconds from the first creation ({} in flight) until every StageRun's phase is `Running`, and until all {} pods run. For reference, Kubernetes alone took {:.1} s from creating {} bare Jobs to all their pods running.", s.concurrency, 2 * n, jobs_setup.as_secs_f64(), 2 * n));
    let run_row = |what: &str, b: &Bulk, empty: &Measured| {
        vec![
            what.to_string(),
            secs(&b.to_running),
            secs(&b.pods_running),
            show_ratio(ratio(&b.to_running, empty)),
        ]
    };
    r.table(
        &["", "to Running", "pods running", "÷ empty history"],
        &[
            run_row("empty history, before (a)", &empty_a, &empty_a.to_running),
            run_row("empty history, before (b)", &empty_b, &empty_b.to_running),
            run_row("with history, before (a)", &hist_a, &empty_a.to_running),
            run_row("with history, before (b)", &hist_b, &empty_b.to_running),
        ],
    );

    r.heading("Controller memory and start");
    r.para(&format!("Peak RSS of the controller processes over the whole run (VmHWM, `/proc/PID/status`): **{}**. At start: seconds until `/healthz` answers, and until a StageRun created before the start is `Running` (the controller has caught up with what it found), with RSS and its high-water mark at that moment. History written in {:.1} s. The REST sidecar's peak RSS over the whole run, its watch cache holding every StageRun: **{}**. (The history archive's processes, last, are measured apart, in their section.)", mib(b.peak_kib), history_took.as_secs_f64(), mib(sidecar_peak_kib)));
    r.table(
        &["start", "/healthz", "ready", "RSS", "VmHWM"],
        &[
            ready_row("empty namespace", &start_empty),
            ready_row(&format!("{} finished StageRuns", s.history), &start_history),
            ready_row(
                &format!(
                    "{} StageRuns ({} finished, {n} running)",
                    s.history + n,
                    s.history
                ),
                &start_full,
            ),
        ],
    );

    r.heading("Single cancel latency");
    r.para(&format!("One StageRun (2 jobs) cancelled at a time, with the history present: from the REST call (Cloud Foundry) or from applying a CancelRequest (server-side apply, as `kubectl apply --server-side`), to `Canceling` and to `Failed` with no pod left; beside one Job deleted with Background propagation until its pod is gone. {} samples each.", s.samples));
    let job_p50 = percentile(&job_deletions, 50.0);
    r.table(
        &["", "samples", "p50", "p99", "p50 ÷ Job deletion"],
        &[
            lat_row("REST → Canceling", &rest_canceling, job_p50),
            lat_row("REST → Failed, no pod", &rest_failed, job_p50),
            lat_row("apply → Canceling", &apply_canceling, job_p50),
            lat_row("apply → Failed, no pod", &apply_failed, job_p50),
            lat_row(
                "baseline: one Job deletion → no pod",
                &job_deletions,
                job_p50,
            ),
        ],
    );

    r.heading("REST reads");
    r.para(&format!("Mean of {rounds} sequential GETs from the sidecar's watch cache, with the history present, beside its `/healthz`."));
    let rel = |d: Duration| format!("{:.2}×", d.as_secs_f64() / healthz.as_secs_f64().max(1e-9));
    let mut reads = vec![vec![
        "GoCD stage history (a pipeline of the history)".into(),
        ms(gocd_history),
        rel(gocd_history),
    ]];
    if let Some(t) = task {
        reads.push(vec!["Cloud Foundry GET task".into(), ms(t), rel(t)]);
    }
    reads.push(vec![
        "baseline: /healthz".into(),
        ms(healthz),
        "1.00×".into(),
    ]);
    r.table(&["", "mean", "÷ /healthz"], &reads);

    history::report(&mut r, s, &archive);

    // Targets.
    let to = |m: &Measured| m.as_ref().ok().map(|d| d.as_secs_f64());
    for (what, m) in [
        ("bulk (a) empty history", &empty_a.cancel),
        ("bulk (a) with history", &hist_a.cancel),
        ("bulk (b) empty history", &empty_b.cancel),
        ("bulk (b) with history", &hist_b.cancel),
    ] {
        r.target(
            &format!("{what} ÷ Kubernetes alone"),
            ratio(m, &gc),
            1.0,
            "×",
        );
        r.target(&format!("{what} ÷ floor"), ratio(m, &floor), 2.0, "×");
    }
    r.target(
        "bulk (a) with history ÷ empty history",
        ratio(&hist_a.cancel, &empty_a.cancel),
        1.2,
        "×",
    );
    r.target(
        "bulk (b) with history ÷ empty history",
        ratio(&hist_b.cancel, &empty_b.cancel),
        1.2,
        "×",
    );
    r.target(
        "to Running with history ÷ empty history (a)",
        ratio(&hist_a.to_running, &empty_a.to_running),
        1.2,
        "×",
    );
    r.target(
        "to Running with history ÷ empty history (b)",
        ratio(&hist_b.to_running, &empty_b.to_running),
        1.2,
        "×",
    );
    r.target(
        "controller peak RSS",
        Some(b.peak_kib as f64 / 1024.0),
        128.0,
        " MiB",
    );
    // 1,000 in 30 s; other scales keep the rate.
    let limit = 30.0 * n as f64 / 1000.0;
    for (what, m) in [
        ("empty history (a)", &empty_a.to_running),
        ("empty history (b)", &empty_b.to_running),
        ("with history (a)", &hist_a.to_running),
        ("with history (b)", &hist_b.to_running),
    ] {
        r.target(
            &format!("{n} StageRuns Running, {what}"),
            to(m),
            (limit * 10.0).round() / 10.0,
            " s",
        );
    }

    history::targets(&mut r, &archive);

    r.heading("Method");
    r.para(&format!("1. Empty namespace: a controller starts; {n} StageRuns are created and run (2 kwok pods each), then cancelled with one Cloud Foundry `POST /v3/tasks/{{guid}}/actions/cancel` each ({c} connections, as the `operator` token user); they are deleted, {n} more run and are cancelled by one CancelRequest with a label selector.\n2. Baselines: {j} bare Jobs with the same pod run, then are deleted with Background propagation (Kubernetes alone); {j} more run, then each Job and its pod are deleted directly, {c} requests in flight (floor).\n3. History: with no controller running, {h} StageRuns are created and given a finished status (Succeeded, Failed or Cancelled, with ids and times) through the status subresource, and {q} CancelRequests likewise (Completed). A controller starts; {n} StageRuns run; the controller is restarted with all of them present; the two bulk cancels are repeated.\n4. Single cancels and Job deletions, one at a time; the sidecar's reads.\n5. Last, the history archive: the namespace emptied, a controller and a REST API of their own with the archive (its section says how).\n\nTimes end when the benchmark's own watches see the condition hold (no polling of the API server). A wait that reaches its deadline ({t} s) is reported as timed out and its leftovers are deleted before the next step.", c = s.concurrency, j = 2 * n, h = s.history, q = s.history_requests, t = s.timeout.as_secs()));

    let mut text = r.markdown();
    // Notes kept across runs (profiles, analysis of a missed target).
    if let Some(out) = &b.settings.out
        && let Ok(old) = std::fs::read_to_string(out)
        && let Some(at) = old.find(NOTES_MARKER)
    {
        text.push('\n');
        text.push_str(&old[at..]);
    }
    println!("{text}");
    if let Some(out) = &b.settings.out {
        std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(2);
        }
    };
    // Children are killed on drop (kill_on_drop), also when this fails.
    if let Err(e) = run(settings).await {
        eprintln!("bench: failed: {e:#}");
        std::process::exit(1);
    }
}
