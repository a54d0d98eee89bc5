//! Faults in combination, under load. Running StageRuns are cancelled through
//! every way in (the four REST APIs, `kubectl cancel`, a selector
//! CancelRequest) while two controller replicas are SIGKILLed at random
//! moments (the leader among them) and restarted, the kube-apiserver is
//! restarted, and the leader's network path to the API server is cut
//! (black-holed, or every connection refused, by a proxy in front of each
//! replica) until the other replica has taken over. Afterwards nothing is
//! lost, nothing is done twice, nothing is stuck, no REST call was answered
//! 5xx except the documented 503 while the API server was away, and each
//! cut-off leader stopped on its own, its last write (from the API server's
//! audit log) before the new leader's first.
//!
//! `make test` runs a short version; `make chaos` the full one (200 StageRuns,
//! 10 kills, 2 API server restarts, 2 partitions). Knobs: CHAOS_RUNS,
//! CHAOS_KILLS, CHAOS_APISERVER_RESTARTS, CHAOS_PARTITIONS, CHAOS_SEED (the
//! schedule is printed with its seed, so a failing run can be replayed). This
//! binary holds a single test because it restarts the API server every other
//! test shares.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cancel_operator::crd::{CancelRequest, RequestPhase, RunResult, StagePhase, StageRun};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::proxy::{self, Path, Proxy};
use support::world::{self, PASSWORD, UsersFile};
use support::{TestNamespace, User, stage_run, try_wait_list, wait_list};

const LEASE: &str = "cancel-operator-controller";
const REPLICAS: [&str; 2] = ["chaos-a", "chaos-b"];
/// Seconds a cancelled job's pods take to stop (they ignore SIGTERM): the
/// cancels are in flight while the faults land.
const GRACE: i64 = 3;
/// How long everything may take to settle once the faults stop.
const SETTLE: Duration = Duration::from_secs(300);

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How each StageRun is cancelled (or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    GoCd,
    CodeArts,
    Studio,
    CloudFoundry,
    Kubectl,
    Selector,
    /// Not cancelled: runs to success.
    Untouched,
}

const WAYS: [Way; 7] = [
    Way::GoCd,
    Way::CodeArts,
    Way::Studio,
    Way::CloudFoundry,
    Way::Kubectl,
    Way::Selector,
    Way::Untouched,
];

impl Way {
    /// The status of the API's documented answer when the Kubernetes API
    /// cannot be reached: GoCD and Cloud Foundry answer 503, CodeArts and
    /// Studio their own internal-error 500.
    fn unavailable(self) -> u16 {
        match self {
            Way::CodeArts | Way::Studio => 500,
            _ => 503,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Way::GoCd => "gocd",
            Way::CodeArts => "codearts",
            Way::Studio => "studio",
            Way::CloudFoundry => "cf",
            Way::Kubectl => "kubectl",
            Way::Selector => "selector",
            Way::Untouched => "untouched",
        }
    }
}

fn stagerun(i: usize, way: Way) -> StageRun {
    // Cancelled runs would run for an hour and ignore SIGTERM; untouched
    // ones finish on their own while the faults land.
    let annotations = if way == Way::Untouched {
        json!({"sim.cancel.dev/run-for": "20s"})
    } else {
        json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"})
    };
    stage_run(&format!("chaos{i}-1-build"))
        .labels(json!({"chaos": way.label()}))
        .of((&format!("chaos{i}"), 1, "build"))
        .grace(GRACE)
        .image("ant")
        .job("compile", annotations.clone())
        .job("test", annotations)
        .cleanup("report", "Always", json!({"sim.cancel.dev/run-for": "2s"}))
        .build()
}

fn phase(r: &StageRun) -> Option<StagePhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// What the test saw, for the assertions and the printed figures.
#[derive(Default)]
struct Log {
    /// When the API server was away: from the restart's start to its end.
    outages: Vec<(Instant, Instant)>,
    /// REST answers: (way, status, when).
    answers: Vec<(Way, u16, Instant)>,
    kills: usize,
    leader_kills: usize,
    /// Replicas that exited on their own (restarted, as a Deployment
    /// would): their users, and whether they exited with success.
    exits: Vec<(String, bool)>,
    apiserver_restarts: usize,
    /// Seconds from each fault until a live replica renewed the Lease.
    recoveries: Vec<f64>,
    partitions: Vec<Partition>,
}

/// A leader cut off from the API server.
struct Partition {
    cut: Path,
    at: Timestamp,
    /// The cut-off process's user, and its successor's.
    old: String,
    new: String,
}

/// A controller replica, restarted with the same identity after each kill,
/// reaching the API server through its own proxy.
struct Replica {
    identity: &'static str,
    server: String,
    /// The user this process acts as (impersonated, one per process): the
    /// audit log tells its writes apart.
    user: String,
    child: Child,
}

impl Replica {
    fn start(ns: &str, identity: &'static str, server: &str) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = format!("{ns}-{identity}-{n}");
        let kubeconfig = proxy::replica_kubeconfig(&user, Some(server));
        let child = world::controller_process(
            ns,
            &["--leader-elect", "--lease-duration-seconds", "4"],
            &[("POD_NAME", identity), ("KUBECONFIG", &kubeconfig)],
        );
        Replica {
            identity,
            server: server.to_string(),
            user,
            child,
        }
    }

    fn restart(&mut self, ns: &str) {
        *self = Replica::start(ns, self.identity, &self.server);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn lease_holder(leases: &Api<Lease>) -> Option<(String, Timestamp)> {
    let lease = leases.get_opt(LEASE).await.ok()??;
    let spec = lease.spec?;
    Some((spec.holder_identity?, spec.renew_time?.0))
}

/// Waits until a replica (other than `not`) holds the Lease and has
/// renewed it after `since`.
async fn wait_led(leases: &Api<Lease>, since: Timestamp, not: Option<&str>) -> f64 {
    let start = Instant::now();
    loop {
        if let Some((holder, renewed)) = lease_holder(leases).await
            && renewed > since
            && Some(holder.as_str()) != not
        {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no replica renewed the Lease within 120 s of a fault"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts the API server, then kwok. kwok stands in for the nodes' kubelets,
/// but unlike a kubelet it can drop a pod's pending transition (a job's pod
/// due to finish) that fell within the outage, and never report it: the run
/// would then stay Running for good. Restarted, it reads every pod afresh, as
/// a kubelet reports its pods again once the API server is back.
fn restart_apiserver() {
    support::restart_component("kube-apiserver");
    support::restart_component("kwok");
}

/// Restarts replicas that exit on their own, as a Deployment would.
async fn supervise(ns: String, replicas: Arc<Mutex<Vec<Replica>>>, log: Arc<Mutex<Log>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut all = replicas.lock().unwrap();
        for r in all.iter_mut() {
            if let Ok(Some(status)) = r.child.try_wait() {
                eprintln!(
                    "chaos: {} ({}) exited on its own ({status}); restarting it",
                    r.identity, r.user
                );
                log.lock()
                    .unwrap()
                    .exits
                    .push((r.user.clone(), status.success()));
                r.restart(&ns);
            }
        }
    }
}

/// How many faults of each kind.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    kills: u64,
    restarts: u64,
    partitions: u64,
}

/// One fault, numbered within its kind.
#[derive(Clone, Copy)]
enum Fault {
    Kill(u64),
    Partition(u64),
}

/// Kills replicas (the Lease's holder every other time), restarts the API
/// server after some kills, and cuts the leader off, at random moments and
/// in a random order, following `rng`.
async fn inject_faults(
    ns: String,
    leases: Api<Lease>,
    replicas: Arc<Mutex<Vec<Replica>>>,
    proxies: Arc<Vec<Proxy>>,
    schedule: Schedule,
    mut rng: fastrand::Rng,
    log: Arc<Mutex<Log>>,
) {
    // Which kills are followed by an API server restart.
    let mut restart_after: Vec<u64> = (0..schedule.kills).collect();
    rng.shuffle(&mut restart_after);
    restart_after.truncate(schedule.restarts as usize);
    let mut faults: Vec<Fault> = (0..schedule.kills)
        .map(Fault::Kill)
        .chain((0..schedule.partitions).map(Fault::Partition))
        .collect();
    rng.shuffle(&mut faults);
    for fault in faults {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
        match fault {
            Fault::Kill(k) => {
                let fault = Timestamp::now();
                kill(&ns, &leases, &replicas, k, &mut rng, &log).await;
                if restart_after.contains(&k) {
                    eprintln!("chaos: restarting kube-apiserver");
                    let down = Instant::now();
                    tokio::task::spawn_blocking(restart_apiserver)
                        .await
                        .expect("join");
                    let mut l = log.lock().unwrap();
                    l.outages.push((down, Instant::now()));
                    l.apiserver_restarts += 1;
                }
                let took = wait_led(&leases, fault, None).await;
                log.lock().unwrap().recoveries.push(took);
            }
            Fault::Partition(p) => partition(&leases, &replicas, &proxies, p, &log).await,
        }
    }
}

/// SIGKILLs a replica (the leader every other time) and starts it again.
async fn kill(
    ns: &str,
    leases: &Api<Lease>,
    replicas: &Mutex<Vec<Replica>>,
    k: u64,
    rng: &mut fastrand::Rng,
    log: &Mutex<Log>,
) {
    let holder = lease_holder(leases).await.map(|(h, _)| h);
    let at_leader = k.is_multiple_of(2) && holder.is_some();
    let mut all = replicas.lock().unwrap();
    let i = match (&holder, at_leader) {
        (Some(h), true) => all.iter().position(|r| r.identity == h).unwrap_or(0),
        _ => rng.usize(0..all.len()),
    };
    eprintln!(
        "chaos: kill {} ({}{})",
        k + 1,
        all[i].identity,
        if at_leader { ", the leader" } else { "" }
    );
    let _ = all[i].child.kill();
    let _ = all[i].child.wait();
    let mut l = log.lock().unwrap();
    l.kills += 1;
    l.leader_kills += usize::from(at_leader);
    drop(l);
    all[i].restart(ns);
}

/// Cuts the leader's path to the API server (black-holed, or every
/// connection refused, in turn) until the other replica leads and the
/// cut-off one has stopped on its own; then heals the path.
async fn partition(
    leases: &Api<Lease>,
    replicas: &Mutex<Vec<Replica>>,
    proxies: &[Proxy],
    p: u64,
    log: &Mutex<Log>,
) {
    wait_led(leases, Timestamp::now(), None).await;
    let (holder, _) = lease_holder(leases).await.expect("a leader");
    let i = REPLICAS
        .iter()
        .position(|r| *r == holder)
        .expect("a replica leads");
    let old = replicas.lock().unwrap()[i].user.clone();
    let cut = if p.is_multiple_of(2) {
        Path::BlackHole
    } else {
        Path::Rejected
    };
    eprintln!("chaos: partition {} ({holder}, the leader: {cut:?})", p + 1);
    let at = Timestamp::now();
    proxies[i].set(cut);
    let took = wait_led(leases, at, Some(&holder)).await;
    let (successor, _) = lease_holder(leases).await.expect("a leader");
    let new = (replicas.lock().unwrap().iter())
        .find(|r| r.identity == successor)
        .map(|r| r.user.clone())
        .expect("the new leader");
    // The supervisor restarts it (still cut off) once it has stopped.
    support::eventually("the cut-off leader to stop on its own", SETTLE, || {
        let stopped = (log.lock().unwrap().exits.iter()).any(|(user, _)| *user == old);
        let result = stopped
            .then_some(())
            .ok_or_else(|| format!("{old} still runs"));
        async move { result }
    })
    .await;
    proxies[i].set(Path::Open);
    let mut l = log.lock().unwrap();
    l.recoveries.push(took);
    l.partitions.push(Partition { cut, at, old, new });
}

/// Cancels each of `runs` through the REST API of `way`, retrying its
/// documented answer for an API server that is away; records every answer.
async fn cancel_by_rest(
    base: String,
    way: Way,
    runs: Vec<(String, String, String)>,
    pace: Duration,
    mut rng: fastrand::Rng,
    log: Arc<Mutex<Log>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let token = support::token(User::Operator);
    for (_name, pipeline, uid) in runs {
        tokio::time::sleep(pace.mul_f64(rng.f64() * 2.0)).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let req = match way {
                Way::GoCd => http
                    .post(format!("{base}/go/api/stages/{pipeline}/1/build/1/cancel"))
                    .basic_auth("admin", Some(PASSWORD))
                    .header("Accept", "application/vnd.go.cd.v3+json")
                    .header("X-GoCD-Confirm", "true"),
                Way::CodeArts => http
                    .post(format!("{base}/v3/jobs/{pipeline}/1/stop"))
                    .header("X-Auth-Token", &token),
                Way::Studio => http
                    .post(format!("{base}/studio/api/2/publish/cancel"))
                    .bearer_auth(&token)
                    .json(&json!({"siteId": pipeline, "packageIds": [uid]})),
                Way::CloudFoundry => http
                    .put(format!("{base}/v3/tasks/{uid}/cancel"))
                    .bearer_auth(&token),
                _ => unreachable!("not a REST way"),
            };
            let status = match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => panic!("{way:?} cancel of {pipeline}: no answer: {e}"),
            };
            log.lock()
                .unwrap()
                .answers
                .push((way, status, Instant::now()));
            match status {
                200..=299 => break,
                s if s == way.unavailable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                s => panic!("{way:?} cancel of {pipeline} answered {s}"),
            }
        }
    }
}

/// `kubectl cancel stagerun NAME` as operator, with the plugin on PATH,
/// retried while the API server is away.
async fn cancel_by_kubectl(ns: String, names: Vec<String>, pace: Duration, mut rng: fastrand::Rng) {
    for name in names {
        tokio::time::sleep(pace.mul_f64(rng.f64() * 2.0)).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let mut cmd = world::kubectl_cancel(&ns, &["stagerun", &name], User::Operator);
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("kubectl"))
                .await
                .expect("join");
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl cancel stagerun {name} kept failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One selector CancelRequest over the runs labelled for it, created once
/// (retried while the API server is away).
async fn cancel_by_selector(client: Client, ns: String, delay: Duration) {
    tokio::time::sleep(delay).await;
    let requests: Api<CancelRequest> = Api::namespaced(client, &ns);
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": "chaos-selector"},
        "spec": {"target": {"selector": {"matchLabels": {"chaos": "selector"}}},
                 "reason": "chaos", "requestedBy": "chaos"}
    }))
    .expect("request");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match requests.create(&PostParams::default(), &request).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "selector request: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Events of `reason` on each object, by object name.
fn events_by_object(events: &[Event], reason: &str) -> BTreeMap<String, Vec<Event>> {
    let mut by = BTreeMap::<String, Vec<Event>>::new();
    for e in events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
    {
        let name = e.involved_object.name.clone().unwrap_or_default();
        by.entry(name).or_default().push(e.clone());
    }
    by
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_survive_controller_kills_and_apiserver_restarts() {
    let n = knob("CHAOS_RUNS", 35) as usize;
    let kills = knob("CHAOS_KILLS", 3);
    let restarts = knob("CHAOS_APISERVER_RESTARTS", 1);
    let partitions = knob("CHAOS_PARTITIONS", 1);
    let seed = knob(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    );
    eprintln!(
        "chaos: {n} StageRuns, {kills} controller kills, {restarts} API server restarts, {partitions} partitions, CHAOS_SEED={seed}"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();

    let ns = TestNamespace::new("chaos").await;
    support::install_crds(&ns.client).await;
    world::grant_readers_and_cancellers(&ns).await;
    let users = UsersFile::new(&ns.name);
    let (addr, sidecar) = world::spawn_sidecar(
        ns.client.clone(),
        &ns.name,
        Some(&users.path),
        Duration::ZERO,
    )
    .await;
    let _sidecar = world::AbortOnDrop(vec![sidecar.abort_handle()]);
    let http = reqwest::Client::new();
    world::wait_ready(&http, addr).await;
    let mut proxies = Vec::new();
    for _ in REPLICAS {
        proxies.push(Proxy::start(proxy::api_server()).await);
    }
    let replicas = Arc::new(Mutex::new(
        (REPLICAS.iter().zip(&proxies))
            .map(|(id, p)| Replica::start(&ns.name, id, &p.addr.to_string()))
            .collect::<Vec<_>>(),
    ));
    let proxies = Arc::new(proxies);

    // The work: n StageRuns, spread over the ways in.
    let runs: Api<StageRun> = ns.api();
    let mut by_way: BTreeMap<Way, Vec<(String, String, String)>> = BTreeMap::new();
    for i in 0..n {
        let way = WAYS[i % WAYS.len()];
        let created = runs
            .create(&PostParams::default(), &stagerun(i, way))
            .await
            .expect("create stagerun");
        by_way.entry(way).or_default().push((
            created.name_any(),
            created.spec.pipeline.clone(),
            created.uid().expect("uid"),
        ));
    }
    wait_list(
        &runs,
        &ListParams::default(),
        "every StageRun running",
        Duration::from_secs(180),
        |items: &[StageRun]| {
            items.len() == n && items.iter().all(|r| phase(r) == Some(StagePhase::Running))
        },
    )
    .await;
    eprintln!(
        "chaos: {n} StageRuns running after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Faults and cancels at once.
    let log = Arc::new(Mutex::new(Log::default()));
    let supervisor = tokio::spawn(supervise(ns.name.clone(), replicas.clone(), log.clone()));
    let _supervisor = world::AbortOnDrop(vec![supervisor.abort_handle()]);
    let leases: Api<Lease> = ns.api();
    let faults = tokio::spawn(inject_faults(
        ns.name.clone(),
        leases.clone(),
        replicas.clone(),
        proxies.clone(),
        Schedule {
            kills,
            restarts,
            partitions,
        },
        rng.fork(),
        log.clone(),
    ));
    // Cancels are spread over about as long as the faults take, so that
    // they meet them: a kill every 0.3-2.5 s, an API server restart ~8 s,
    // a partition ~6 s.
    let window = Duration::from_millis(1400 * kills + 8000 * restarts + 6000 * partitions);
    let per_way = n.div_ceil(WAYS.len()).max(1) as u32;
    let pace = window / per_way;
    let base = format!("http://{addr}");
    let mut cancels = Vec::new();
    for (way, targets) in &by_way {
        let task = match way {
            Way::GoCd | Way::CodeArts | Way::Studio | Way::CloudFoundry => {
                tokio::spawn(cancel_by_rest(
                    base.clone(),
                    *way,
                    targets.clone(),
                    pace,
                    rng.fork(),
                    log.clone(),
                ))
            }
            Way::Kubectl => tokio::spawn(cancel_by_kubectl(
                ns.name.clone(),
                targets.iter().map(|t| t.0.clone()).collect(),
                pace,
                rng.fork(),
            )),
            Way::Selector => tokio::spawn(cancel_by_selector(
                ns.client.clone(),
                ns.name.clone(),
                window.mul_f64(rng.f64()),
            )),
            Way::Untouched => continue,
        };
        cancels.push(task);
    }
    for task in cancels {
        task.await.expect("a canceller failed");
    }
    faults.await.expect("the fault injector failed");
    let faults_done = Instant::now();

    // Everything settles: every run terminal, every request done.
    let terminal =
        |r: &StageRun| matches!(phase(r), Some(StagePhase::Succeeded | StagePhase::Failed));
    let settled = match try_wait_list(
        &runs,
        &ListParams::default(),
        "every StageRun terminal",
        SETTLE,
        |items: &[StageRun]| items.len() == n && items.iter().all(terminal),
    )
    .await
    {
        Ok(settled) => settled,
        Err(now) => {
            let stuck: Vec<&StageRun> = now.iter().filter(|r| !terminal(r)).collect();
            panic!(
                "{} of {n} StageRuns not terminal {SETTLE:?} after the last fault (seed {seed}):\n{}",
                stuck.len(),
                describe_stuck(&ns, &stuck).await
            );
        }
    };
    let requests: Api<CancelRequest> = ns.api();
    let done_requests = wait_list(
        &requests,
        &ListParams::default(),
        "every CancelRequest done",
        SETTLE,
        |items: &[CancelRequest]| {
            items.iter().all(|r| {
                matches!(
                    r.status.as_ref().and_then(|s| s.phase),
                    Some(RequestPhase::Completed | RequestPhase::Rejected)
                )
            })
        },
    )
    .await;
    let settle_time = faults_done.elapsed().as_secs_f64();

    // Nothing lost: each targeted run ended Cancelled, each untouched one
    // passed; no pod of a cancelled run is left.
    let way_of: BTreeMap<&str, Way> = by_way
        .iter()
        .flat_map(|(w, ts)| ts.iter().map(move |t| (t.0.as_str(), *w)))
        .collect();
    let mut lost = Vec::new();
    for r in &settled {
        let st = r.status.as_ref().expect("status");
        let want = if way_of[r.name_any().as_str()] == Way::Untouched {
            RunResult::Passed
        } else {
            RunResult::Cancelled
        };
        if st.result != Some(want) {
            lost.push(format!("{}: {:?} {:?}", r.name_any(), st.phase, st.result));
        }
    }
    // Each run's cleanup job ran at most once and ended with its own result
    // (one a cancel reached before the run started was skipped). Two
    // witnesses, since either may miss a creation: the API server's audit
    // log (it has no record of a request the restart cut short, though the
    // object was stored) and the job controller's Events (they name the
    // Job by uid; lost while the API server is away).
    let creations = proxy::created("jobs", &ns.name);
    let job_events: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default().fields("reason=SuccessfulCreate"))
        .await
        .expect("events")
        .items;
    let mut cleanup_wrong = Vec::new();
    for r in &settled {
        let st = r.status.as_ref().expect("status");
        let report = st.jobs.iter().find(|j| j.name == "report");
        let job_name = report.and_then(|j| j.job_name.as_deref());
        let made = job_name.map_or(0, |n| creations.iter().filter(|c| *c == n).count());
        let uids: BTreeSet<&str> = (job_events.iter())
            .filter(|e| job_name.is_some() && e.involved_object.name.as_deref() == job_name)
            .filter_map(|e| e.involved_object.uid.as_deref())
            .collect();
        let ok = report.is_some_and(|j| {
            (j.result == RunResult::Passed && made <= 1 && uids.len() <= 1)
                || (j.skipped && job_name.is_none())
        });
        if !ok {
            cleanup_wrong.push(format!(
                "{}: {report:?}, its Job created {made} time(s) by the audit log, as {} Job(s) by the Events",
                r.name_any(),
                uids.len()
            ));
        }
    }
    let pods: Api<Pod> = ns.api();
    let mut left = Vec::new();
    for r in settled
        .iter()
        .filter(|r| way_of[r.name_any().as_str()] != Way::Untouched)
    {
        let selector = format!("cancel.dev/stagerun-uid={}", r.uid().expect("uid"));
        let found = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list pods");
        left.extend(found.items.iter().map(|p| p.name_any()));
    }

    // Nothing twice: one Canceling and at most one Cancelled Event per run,
    // one Completed-or-Rejected Event per request, none repeated (a repeat
    // would carry a series).
    let events: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let mut duplicated = Vec::new();
    for reason in [
        "Canceling",
        "Cancelled",
        "Completed",
        "Rejected",
        "Succeeded",
        "CleanupStarted",
    ] {
        for (object, evs) in events_by_object(&events, reason) {
            if evs.len() > 1 || evs.iter().any(|e| e.series.is_some()) {
                duplicated.push(format!("{object}: {} {reason} Event(s)", evs.len()));
            }
        }
    }
    let canceling = events_by_object(&events, "Canceling");
    let mut unrecorded = 0;
    for r in &settled {
        let st = r.status.as_ref().expect("status");
        if st.result == Some(RunResult::Cancelled) && !canceling.contains_key(&r.name_any()) {
            // The status is the record; the Event is lost when a kill lands
            // between the status write and the Event.
            unrecorded += 1;
        }
    }
    let rejected = done_requests
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Rejected))
        .count();

    // No 5xx but the documented 503 while the API server was away.
    let log = log.lock().unwrap();
    let mut bad_answers = Vec::new();
    let mut unavailable = 0;
    for (way, status, at) in &log.answers {
        if *status < 500 {
            continue;
        }
        // A call that started within the outage may be answered just after it.
        let during = log
            .outages
            .iter()
            .any(|(from, to)| *at >= *from && *at <= *to + Duration::from_secs(10));
        if *status == way.unavailable() && during {
            unavailable += 1;
        } else {
            bad_answers.push(format!("{way:?}: {status}"));
        }
    }

    let mut recoveries = log.recoveries.clone();
    recoveries.sort_by(f64::total_cmp);
    let issued: usize = by_way
        .iter()
        .filter(|(w, _)| **w != Way::Untouched)
        .map(|(_, t)| t.len())
        .sum();
    println!("chaos figures (CHAOS_SEED={seed}):");
    println!(
        "  faults: {} controller kills ({} of the leader), {} API server restarts, {} partitions of the leader {:?}",
        log.kills,
        log.leader_kills,
        log.apiserver_restarts,
        log.partitions.len(),
        log.partitions.iter().map(|p| p.cut).collect::<Vec<_>>()
    );
    println!(
        "  cancels: {issued} StageRuns by {} ways ({} REST answers, {} of them the documented unavailable answer), {} CancelRequests ({} rejected)",
        WAYS.len() - 1,
        log.answers.len(),
        unavailable,
        done_requests.len(),
        rejected
    );
    println!(
        "  lost {}, duplicated {}, cleanup jobs run twice or not passed {}, stuck 0, pods left {}, Canceling Events lost to a kill {}",
        lost.len(),
        duplicated.len(),
        cleanup_wrong.len(),
        left.len(),
        unrecorded
    );
    let mut reasons = BTreeMap::<String, usize>::new();
    for e in &events {
        *reasons
            .entry(e.reason.clone().unwrap_or_default())
            .or_default() += 1;
    }
    println!("  Events by reason: {reasons:?}");
    println!(
        "  replicas that exited on their own: {} {:?}",
        log.exits.len(),
        log.exits
    );
    println!(
        "  recovery after a fault (a replica renewing the Lease): p50 {:.1} s, max {:.1} s",
        percentile(&recoveries, 0.5),
        percentile(&recoveries, 1.0)
    );
    println!(
        "  settled {settle_time:.1} s after the last fault; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(lost.is_empty(), "lost: {lost:#?}");
    assert!(cleanup_wrong.is_empty(), "cleanup: {cleanup_wrong:#?}");
    assert!(left.is_empty(), "pods left: {left:#?}");
    assert!(duplicated.is_empty(), "done twice: {duplicated:#?}");
    assert!(bad_answers.is_empty(), "5xx answers: {bad_answers:#?}");
    assert_eq!(log.kills as u64, kills);
    assert_eq!(log.apiserver_restarts as u64, restarts);
    assert_eq!(log.partitions.len() as u64, partitions);
    // Each cut-off leader stopped on its own with an error, and wrote
    // nothing after its successor's first write (from the audit log).
    for p in &log.partitions {
        let exits: Vec<bool> = (log.exits.iter())
            .filter(|(user, _)| *user == p.old)
            .map(|(_, ok)| *ok)
            .collect();
        assert_eq!(exits, vec![false], "{} exits", p.old);
        let first_new = (proxy::writes_of(&p.new).into_iter())
            .find(|t| *t > p.at)
            .expect("the new leader's writes");
        if let Some(last_old) = proxy::writes_of(&p.old).last() {
            assert!(
                *last_old < first_new,
                "{} ({:?}) wrote at {last_old}, after its successor's first write at {first_new}",
                p.old,
                p.cut
            );
        }
    }
}

/// What a run that never settled is waiting on: its status, and each of its
/// Jobs' spec and conditions and pods, for a failure that names its cause.
async fn describe_stuck(ns: &TestNamespace, stuck: &[&StageRun]) -> String {
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let mut out = String::new();
    for r in stuck {
        let st = r.status.as_ref();
        out += &format!(
            "  {}: phase {:?}, conditions {:?}\n",
            r.name_any(),
            st.and_then(|s| s.phase),
            st.map(|s| s
                .conditions
                .iter()
                .map(|c| format!("{}={} {}", c.type_, c.status, c.reason))
                .collect::<Vec<_>>()),
        );
        let selector = format!("cancel.dev/stagerun-uid={}", r.uid().unwrap_or_default());
        let lp = ListParams::default().labels(&selector);
        for job in jobs.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let status = job.status.clone().unwrap_or_default();
            out += &format!(
                "    Job {}: suspend {:?}, deleting {}, active {:?}, ready {:?}, conditions {:?}\n",
                job.name_any(),
                job.spec.as_ref().and_then(|s| s.suspend),
                job.metadata.deletion_timestamp.is_some(),
                status.active,
                status.ready,
                status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect::<Vec<_>>(),
            );
        }
        for pod in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            out += &format!(
                "    Pod {}: phase {:?}, deleting {}, node {:?}\n",
                pod.name_any(),
                pod.status.as_ref().and_then(|s| s.phase.clone()),
                pod.metadata.deletion_timestamp.is_some(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            );
        }
    }
    out + &format!(
        "  controller logs: {}\n",
        world::controller_log_dir().display()
    )
}
