//! Watch caches: one watch per resource kind, shared by both controllers,
//! with indexes for every lookup a reconcile makes. A reconcile reads from
//! here and never LISTs a namespace.
//!
//! Objects are trimmed before they are cached: managedFields, the
//! last-applied annotation and every field the controller never reads are
//! dropped, and a finished StageRun keeps only its identity, labels, index
//! fields and outcome. Memory then follows the number of objects, not their
//! size.
//!
//! Reads from a cache can be stale. Decisions stay safe because every status
//! write carries the resourceVersion it was decided on (a stale decision is
//! refused with 409 and taken again), deletions are idempotent, a Job create
//! that finds the Job already there checks its owner, and the one decision
//! that cannot be undone — a cancelled run reported `Failed` — is confirmed
//! by a fresh read first (see `plan::decide` and `stagerun::confirm_children`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use kube::api::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Api, Resource, ResourceExt};

use super::namespaces::{self, Feed};
use super::views::{JobView, PodView};
use crate::crd::{CancelRequest, RequestPhase, StageRun};

/// The label the job controller sets on the pods of a Job: its uid.
pub const JOB_POD_LABEL: &str = "batch.kubernetes.io/controller-uid";

/// Index keys map to the objects that carry them.
struct Maps<K: Resource> {
    forward: HashMap<String, HashSet<ObjectRef<K>>>,
    reverse: HashMap<ObjectRef<K>, Vec<String>>,
}

impl<K: Resource<DynamicType = ()>> Maps<K> {
    fn new() -> Self {
        Maps {
            forward: HashMap::new(),
            reverse: HashMap::new(),
        }
    }

    fn remove(&mut self, obj: &ObjectRef<K>) {
        if let Some(keys) = self.reverse.remove(obj) {
            for key in keys {
                if let Some(set) = self.forward.get_mut(&key) {
                    set.remove(obj);
                    if set.is_empty() {
                        self.forward.remove(&key);
                    }
                }
            }
        }
    }

    fn insert(&mut self, obj: ObjectRef<K>, keys: Vec<String>) {
        self.remove(&obj);
        for key in &keys {
            self.forward
                .entry(key.clone())
                .or_default()
                .insert(obj.clone());
        }
        if !keys.is_empty() {
            self.reverse.insert(obj, keys);
        }
    }
}

struct IndexState<K: Resource> {
    live: Maps<K>,
    /// Filled during a (re)list and swapped in when it is complete, like the
    /// store itself, so that objects deleted while the watch was down go.
    relisting: Option<Maps<K>>,
}

/// An object's reference without its uid and resourceVersion (which equality
/// and hashing ignore): the indexes hold one per key.
fn bare_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let meta = obj.meta();
    let r = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// A watch cache of one kind with its indexes.
pub struct Cache<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    index: RwLock<IndexState<K>>,
    keys_of: fn(&K) -> Vec<String>,
    /// True once the indexes hold the first list. The store is ready a
    /// moment earlier (the reflector fills it before the event reaches the
    /// indexes); a decision taken in between would read empty indexes: no
    /// pod left, no run a request names.
    indexed: tokio::sync::watch::Sender<bool>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn apply(&self, event: &Event<K>) {
        let mut state = self.index.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(obj) => state.live.insert(bare_ref(obj), (self.keys_of)(obj)),
            Event::Delete(obj) => state.live.remove(&bare_ref(obj)),
            Event::Init => state.relisting = Some(Maps::new()),
            Event::InitApply(obj) => {
                if let Some(maps) = state.relisting.as_mut() {
                    maps.insert(bare_ref(obj), (self.keys_of)(obj));
                }
            }
            Event::InitDone => {
                if let Some(maps) = state.relisting.take() {
                    state.live = maps;
                }
                self.indexed.send_replace(true);
            }
        }
    }

    fn new(store: Store<K>, keys_of: fn(&K) -> Vec<String>) -> Self {
        Cache {
            store,
            index: RwLock::new(IndexState {
                live: Maps::new(),
                relisting: None,
            }),
            keys_of,
            indexed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The store the controller's scheduler reads objects from.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The cached object, if any.
    pub fn get(&self, obj: &ObjectRef<K>) -> Option<Arc<K>> {
        self.store.get(obj)
    }

    /// The cached objects that carry an index key.
    pub fn lookup(&self, key: &str) -> Vec<Arc<K>> {
        let refs: Vec<ObjectRef<K>> = {
            let state = self.index.read().unwrap_or_else(|p| p.into_inner());
            match state.live.forward.get(key) {
                Some(set) => set.iter().cloned().collect(),
                None => return Vec::new(),
            }
        };
        let mut found: Vec<Arc<K>> = refs.iter().filter_map(|r| self.store.get(r)).collect();
        // A stable order makes decisions reproducible.
        found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        found
    }

    /// How many objects carry an index key.
    pub fn count(&self, key: &str) -> usize {
        let state = self.index.read().unwrap_or_else(|p| p.into_inner());
        state.live.forward.get(key).map_or(0, HashSet::len)
    }

    /// Completes once the first list has been cached and indexed.
    pub async fn ready(&self) {
        let mut indexed = self.indexed.subscribe();
        // Errs only when the cache is gone, i.e. the process is stopping.
        let _ = indexed.wait_for(|done| *done).await;
    }
}

/// Starts caching `namespaces` (all namespaces when empty), one watch per
/// namespace, and returns the cache with the stream that feeds it; the
/// stream must be polled (it yields each event once it is cached).
pub fn cache<K>(
    client: &kube::Client,
    namespaces: &[String],
    config: watcher::Config,
    trim: fn(&mut K),
    keys_of: fn(&K) -> Vec<String>,
) -> (
    Arc<Cache<K>>,
    impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let writer: Writer<K> = Writer::default();
    let store = writer.as_reader();
    let cache = Arc::new(Cache::new(store.clone(), keys_of));
    let indexed = cache.clone();
    let watch = |api: Api<K>| -> Feed<K> {
        watcher::watcher(api, config.clone())
            .modify(trim)
            .backoff(crate::watch::backoff())
            .boxed()
    };
    // Several namespaces: only a Role in each is needed, no cluster-wide
    // list and watch.
    let events = match namespaces {
        [] => watch(Api::all(client.clone())),
        [ns] => watch(Api::namespaced(client.clone(), ns)),
        _ => namespaces::merge(
            namespaces.to_vec(),
            namespaces
                .iter()
                .map(|ns| watch(Api::namespaced(client.clone(), ns)))
                .collect(),
            store,
        )
        .boxed(),
    };
    let stream = reflector::reflector(writer, events).map(move |event| {
        if let Ok(event) = &event {
            indexed.apply(event);
        }
        event
    });
    (cache, stream)
}

// ------------------------------------------------------------- index keys --

/// Index key: StageRun by uid.
pub fn run_by_uid(uid: &str) -> String {
    format!("uid\0{uid}")
}

/// Index key: StageRuns of a pipeline's stage in a namespace.
pub fn runs_by_stage(ns: &str, pipeline: &str, stage: &str) -> String {
    format!("stage\0{ns}\0{pipeline}\0{stage}")
}

/// Index key: StageRuns of one pipeline run (CodeArts build) in a namespace.
pub fn runs_by_build(ns: &str, pipeline: &str, counter: i64) -> String {
    format!("build\0{ns}\0{pipeline}\0{counter}")
}

/// Index key: active StageRuns carrying a label in a namespace.
pub fn active_runs_by_label(ns: &str, key: &str, value: &str) -> String {
    format!("label\0{ns}\0{key}\0{value}")
}

/// Index key: every active StageRun of a namespace.
pub fn active_runs(ns: &str) -> String {
    format!("active\0{ns}")
}

/// Index key: CancelRequests in progress that target a StageRun uid.
pub fn requests_by_target(uid: &str) -> String {
    format!("target\0{uid}")
}

/// Index key: the objects (Jobs, pods) whose controller has this uid.
pub fn children_of(uid: &str) -> String {
    format!("owner\0{uid}")
}

/// Index key: pods whose controller is the Job of this name in a namespace
/// (for runs that recorded a Job's name and not its uid).
pub fn pods_of_job_named(ns: &str, job: &str) -> String {
    format!("job\0{ns}\0{job}")
}

/// Index key: the running StageRun that recorded a Job uid.
pub fn run_by_job_uid(uid: &str) -> String {
    format!("job-uid\0{uid}")
}

/// The controller named in an object's ownerReferences: (kind, name, uid).
pub fn controller_of<K: Resource>(obj: &K) -> Option<(&str, &str, &str)> {
    obj.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str(), o.uid.as_str()))
}

fn stagerun_keys(run: &StageRun) -> Vec<String> {
    let ns = run.namespace().unwrap_or_default();
    let spec = &run.spec;
    let mut keys = vec![
        runs_by_stage(&ns, &spec.pipeline, &spec.stage),
        runs_by_build(&ns, &spec.pipeline, spec.pipeline_counter),
    ];
    if let Some(uid) = run.uid() {
        keys.push(run_by_uid(&uid));
    }
    // Bulk targets match active runs only: finished ones stay out of these
    // keys, so a selector costs what is running, not the history.
    if !run.is_finished() {
        keys.push(active_runs(&ns));
        for (k, v) in run.labels() {
            keys.push(active_runs_by_label(&ns, k, v));
        }
        let jobs = run.status.iter().flat_map(|s| s.jobs.iter());
        keys.extend(jobs.filter_map(|j| j.job_uid.as_deref().map(run_by_job_uid)));
    }
    keys
}

fn request_keys(req: &CancelRequest) -> Vec<String> {
    match &req.status {
        Some(s) if s.phase == Some(RequestPhase::InProgress) => s
            .targets
            .iter()
            .map(|t| requests_by_target(&t.uid))
            .collect(),
        _ => Vec::new(),
    }
}

/// Jobs by their controller's uid: what makes a Job a run's is its
/// ownerReference, not the labels anyone may edit.
fn job_keys(job: &JobView) -> Vec<String> {
    controller_of(job)
        .map(|(_, _, uid)| vec![children_of(uid)])
        .unwrap_or_default()
}

/// Pods by their controller Job's uid, and by its name.
fn pod_keys(pod: &PodView) -> Vec<String> {
    match controller_of(pod) {
        Some(("Job", name, uid)) => vec![
            children_of(uid),
            pods_of_job_named(pod.metadata.namespace.as_deref().unwrap_or_default(), name),
        ],
        _ => Vec::new(),
    }
}

/// True when a StageRun is the object's controller.
fn run_controlled<K: Resource>(obj: &K) -> bool {
    obj.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == StageRun::kind(&())
            && o.api_version == StageRun::api_version(&())
    })
}

// --------------------------------------------------------------- trimming --

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

fn trim_stagerun(run: &mut StageRun) {
    trim_meta(&mut run.metadata);
    // A finished run is never reconciled again. Only what CancelRequests
    // that name it read is kept: its identity and labels, the fields its
    // index keys come from, and how and when it ended (retention reads
    // when), and its highest job id (ids are floored above every id in
    // the cluster). Most of a namespace's runs are its history, so this is
    // most of the cache.
    if run.is_finished() {
        let meta = &mut run.metadata;
        meta.annotations = None;
        meta.owner_references = None;
        meta.finalizers = None;
        run.spec.jobs = Vec::new();
        run.spec.cleanup = Vec::new();
        run.spec.approved_by = String::new();
        if let Some(status) = run.status.as_mut() {
            let highest = std::mem::take(&mut status.jobs)
                .into_iter()
                .max_by_key(|j| j.id);
            status.jobs.extend(highest);
            status.conditions = Vec::new();
            status.failure_reason = None;
            status.start_time = None;
        }
    }
}

fn trim_request(req: &mut CancelRequest) {
    trim_meta(&mut req.metadata);
}

fn trim_job(job: &mut JobView) {
    trim_meta(&mut job.metadata);
    // Every Job is watched (a run's Job is known by its owner, whatever its
    // labels say); of the others only the identity is kept. Of a run's
    // Job, the view holds only what the controller reads (`views`).
    if !run_controlled(job) {
        let meta = &mut job.metadata;
        (meta.labels, meta.annotations) = (None, None);
        job.spec = None;
        job.status = None;
    }
}

fn trim_pod(pod: &mut PodView) {
    trim_meta(&mut pod.metadata);
}

// ------------------------------------------------------------ the caches --

/// Everything the controllers read.
pub struct Caches {
    pub runs: Arc<Cache<StageRun>>,
    pub requests: Arc<Cache<CancelRequest>>,
    pub jobs: Arc<Cache<JobView>>,
    pub pods: Arc<Cache<PodView>>,
}

/// The event streams that feed [`Caches`]; each must be polled.
pub struct Feeds<R, Q, J, P> {
    pub runs: R,
    pub requests: Q,
    pub jobs: J,
    pub pods: P,
}

/// The feeds of [`Caches`], one per kind.
pub type AllFeeds = Feeds<Feed<StageRun>, Feed<CancelRequest>, Feed<JobView>, Feed<PodView>>;

/// The caches for `namespaces` (all namespaces when empty).
pub fn caches(client: &kube::Client, namespaces: &[String]) -> (Caches, AllFeeds) {
    // Every Job: what makes one a run's is its ownerReference, which no
    // selector reads. The pods of every Job: the job controller keeps this
    // label on each pod it owns (and releases a pod that loses it).
    let job_pods = watcher::Config::default().labels(JOB_POD_LABEL);
    let (runs, run_feed) = cache(
        client,
        namespaces,
        watcher::Config::default(),
        trim_stagerun,
        stagerun_keys,
    );
    let (requests, request_feed) = cache(
        client,
        namespaces,
        watcher::Config::default(),
        trim_request,
        request_keys,
    );
    let (jobs, job_feed) = cache(
        client,
        namespaces,
        watcher::Config::default(),
        trim_job,
        job_keys,
    );
    let (pods, pod_feed) = cache(client, namespaces, job_pods, trim_pod, pod_keys);
    (
        Caches {
            runs,
            requests,
            jobs,
            pods,
        },
        Feeds {
            runs: run_feed.boxed(),
            requests: request_feed.boxed(),
            jobs: job_feed.boxed(),
            pods: pod_feed.boxed(),
        },
    )
}

impl Caches {
    /// Completes once every cache holds and indexes its first list: before
    /// that, an empty pod cache would read as "no pod left".
    pub async fn ready(&self) {
        futures::join!(
            self.runs.ready(),
            self.requests.ready(),
            self.jobs.ready(),
            self.pods.ready()
        );
    }
}

/// Caches holding these objects, as after a first list (for tests of the
/// decisions taken on them).
#[cfg(test)]
pub fn caches_of(runs: Vec<StageRun>, requests: Vec<CancelRequest>) -> Caches {
    fn filled<K>(objs: Vec<K>, trim: fn(&mut K), keys_of: fn(&K) -> Vec<String>) -> Arc<Cache<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut writer: Writer<K> = Writer::default();
        let cache = Cache::new(writer.as_reader(), keys_of);
        let mut events = vec![Event::Init];
        events.extend(objs.into_iter().map(|mut o| {
            trim(&mut o);
            Event::InitApply(o)
        }));
        events.push(Event::InitDone);
        for ev in &events {
            writer.apply_watcher_event(ev);
            cache.apply(ev);
        }
        Arc::new(cache)
    }
    Caches {
        runs: filled(runs, trim_stagerun, stagerun_keys),
        requests: filled(requests, trim_request, request_keys),
        jobs: filled(Vec::new(), trim_job, job_keys),
        pods: filled(Vec::new(), trim_pod, pod_keys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;
    use serde_json::json;

    fn run(name: &str, uid: &str, labels: serde_json::Value, phase: Option<&str>) -> StageRun {
        let mut v = json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": labels},
            "spec": {"pipeline": "p", "pipelineCounter": 1, "stage": "s",
                     "jobs": [{"name": "j", "template": {"spec": {"containers": []}}}]}
        });
        if let Some(p) = phase {
            v["status"] = json!({"phase": p});
        }
        serde_json::from_value(v).expect("stagerun")
    }

    fn empty_cache() -> (Cache<StageRun>, Writer<StageRun>) {
        let writer: Writer<StageRun> = Writer::default();
        let cache = Cache::new(writer.as_reader(), stagerun_keys);
        (cache, writer)
    }

    fn feed(cache: &Cache<StageRun>, writer: &mut Writer<StageRun>, ev: Event<StageRun>) {
        writer.apply_watcher_event(&ev);
        cache.apply(&ev);
    }

    /// The reflector fills the store before the event reaches the indexes:
    /// a cache whose store holds its first list but whose indexes do not
    /// yet is not ready, or a reconcile could find no run a request names
    /// and reject it.
    #[test]
    fn a_cache_is_ready_only_once_its_indexes_hold_the_first_list() {
        use futures::FutureExt;
        let (cache, mut w) = empty_cache();
        let events = [
            Event::Init,
            Event::InitApply(run("a", "u1", json!({}), None)),
            Event::InitDone,
        ];
        for ev in &events {
            w.apply_watcher_event(ev);
        }
        assert!(cache.store().wait_until_ready().now_or_never().is_some());
        assert!(
            cache.ready().now_or_never().is_none(),
            "ready before indexed"
        );
        assert!(cache.lookup(&run_by_uid("u1")).is_empty());
        for ev in &events {
            cache.apply(ev);
        }
        assert!(cache.ready().now_or_never().is_some());
        assert_eq!(cache.lookup(&run_by_uid("u1")).len(), 1);
    }

    #[test]
    fn indexes_follow_updates_deletes_and_relists() {
        let (cache, mut w) = empty_cache();
        feed(&cache, &mut w, Event::Init);
        feed(
            &cache,
            &mut w,
            Event::InitApply(run("a", "u1", json!({"team": "x"}), None)),
        );
        feed(
            &cache,
            &mut w,
            Event::InitApply(run("b", "u2", json!({"team": "x"}), Some("Succeeded"))),
        );
        feed(&cache, &mut w, Event::InitDone);
        assert_eq!(cache.lookup(&run_by_uid("u2")).len(), 1);
        assert_eq!(cache.lookup(&runs_by_stage("ns", "p", "s")).len(), 2);
        // Finished runs are not among the active ones.
        assert_eq!(cache.count(&active_runs_by_label("ns", "team", "x")), 1);
        assert_eq!(cache.count(&active_runs("ns")), 1);

        // a finishes: it leaves the active keys.
        feed(
            &cache,
            &mut w,
            Event::Apply(run("a", "u1", json!({"team": "x"}), Some("Failed"))),
        );
        assert_eq!(cache.count(&active_runs("ns")), 0);
        assert_eq!(cache.count(&active_runs_by_label("ns", "team", "x")), 0);

        feed(
            &cache,
            &mut w,
            Event::Delete(run("b", "u2", json!({}), Some("Succeeded"))),
        );
        assert!(cache.lookup(&run_by_uid("u2")).is_empty());

        // A relist that no longer holds a drops it from every index.
        feed(&cache, &mut w, Event::Init);
        feed(
            &cache,
            &mut w,
            Event::InitApply(run("c", "u3", json!({}), None)),
        );
        feed(&cache, &mut w, Event::InitDone);
        assert!(cache.lookup(&run_by_uid("u1")).is_empty());
        assert_eq!(cache.lookup(&run_by_uid("u3")).len(), 1);
        assert_eq!(cache.count(&runs_by_stage("ns", "p", "s")), 1);
    }

    #[test]
    fn trimming_keeps_what_decisions_read() {
        let mut r = run("a", "u1", json!({}), Some("Succeeded"));
        r.metadata.managed_fields = Some(vec![Default::default()]);
        r.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(LAST_APPLIED.into(), "{...}".into());
        let jobs = |ids: &[i64]| -> Vec<crate::crd::JobStatus> {
            (ids.iter())
                .map(|id| {
                    serde_json::from_value(json!({"name": format!("j{id}"), "id": id,
                        "state": "Completed", "result": "Passed"}))
                    .expect("job status")
                })
                .collect()
        };
        r.status.as_mut().expect("status").jobs = jobs(&[4, 9, 7]);
        trim_stagerun(&mut r);
        assert_eq!(
            r.status.as_ref().expect("status").jobs,
            jobs(&[9]),
            "only the highest job id, for the id floor"
        );
        assert!(r.metadata.managed_fields.is_none());
        assert!(r.annotations().get(LAST_APPLIED).is_none());
        assert!(r.spec.jobs.is_empty());
        assert_eq!(r.spec.pipeline, "p");
        assert!(r.is_finished());

        let mut active = run("b", "u2", json!({}), Some("Running"));
        trim_stagerun(&mut active);
        assert_ne!(active.spec.jobs[0].template, serde_json::Value::Null);

        let mut pod: PodView = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns",
                         "labels": {JOB_POD_LABEL: "job-uid"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j-1",
                                              "uid": "job-uid", "controller": true}]},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [
                           {"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0},
                           {"name": "d", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .expect("pod");
        trim_pod(&mut pod);
        let before = crate::controller::plan::ObservedPod::from_pod(&pod, Some("j".into()));
        assert_eq!(
            before.progress,
            crate::controller::plan::PodProgress::Running
        );
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(
            pod_keys(&pod),
            vec![children_of("job-uid"), pods_of_job_named("ns", "j-1")]
        );
    }

    fn job(owner: serde_json::Value, labels: serde_json::Value) -> JobView {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "job-uid",
                         "labels": labels, "ownerReferences": [owner]},
            "spec": {"suspend": true, "template": {}},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}
        }))
        .expect("job")
    }

    #[test]
    fn children_are_indexed_by_their_controller_not_their_labels() {
        let owner = |kind: &str, uid: &str, controller: bool| {
            json!({"apiVersion": "cancel.dev/v1alpha1", "kind": kind, "name": "r",
                   "uid": uid, "controller": controller})
        };
        // Labels that name another run, or none: the owner decides.
        let forged = json!({labels::STAGERUN_UID: "someone-else"});
        let ours = job(owner("StageRun", "run-uid", true), forged);
        assert_eq!(job_keys(&ours), vec![children_of("run-uid")]);
        assert!(run_controlled(&ours));
        // Owned but not controlled, or controlled by another kind.
        let not_controlled = job(owner("StageRun", "run-uid", false), json!({}));
        assert!(job_keys(&not_controlled).is_empty());
        let other = job(owner("CronJob", "cron-uid", true), json!({}));
        assert!(!run_controlled(&other));

        // A Job of no run is kept as an identity only.
        let mut other = other;
        trim_job(&mut other);
        assert!(other.spec.is_none() && other.status.is_none() && other.labels().is_empty());
        let mut ours = ours;
        trim_job(&mut ours);
        assert_eq!(ours.spec.as_ref().and_then(|s| s.suspend), Some(true));

        // A pod carrying a run's labels, owned by no Job, is nobody's child.
        let bare: PodView = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {labels::STAGERUN_UID: "run-uid"}}
        }))
        .expect("pod");
        assert!(pod_keys(&bare).is_empty());
    }

    #[test]
    fn running_runs_are_found_by_their_jobs_uids() {
        let mut r = run("a", "u1", json!({}), Some("Running"));
        r.status.get_or_insert_with(Default::default).jobs = vec![crate::crd::JobStatus {
            name: "j".into(),
            job_uid: Some("job-uid".into()),
            ..Default::default()
        }];
        assert!(stagerun_keys(&r).contains(&run_by_job_uid("job-uid")));
        let mut done = r.clone();
        done.status.as_mut().expect("status").phase = Some(crate::crd::StagePhase::Failed);
        trim_stagerun(&mut done);
        assert!(!stagerun_keys(&done).contains(&run_by_job_uid("job-uid")));
    }
}
