//! A watch cache of StageRuns with the indexes the REST endpoints read:
//! by uid, by pipeline and stage, by pipeline and counter. No request makes
//! an API round trip to read.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::crd::StageRun;

#[derive(Default)]
struct Index {
    by_uid: HashMap<String, Arc<StageRun>>,
    by_stage: HashMap<(String, String), BTreeSet<String>>,
    by_build: HashMap<(String, i64), BTreeSet<String>>,
    by_pipeline: HashMap<String, BTreeSet<String>>,
}

/// Drops what no endpoint reads before a run is kept: managedFields,
/// kubectl's copy of the last applied object and the pod templates (but for
/// what Cloud Foundry shows of the first container) are most of a run's
/// size. A run is kept as the archive keeps it, so that a read answers the
/// same before and after the run moves there.
fn trim(run: StageRun) -> StageRun {
    crate::archive::trim_run(run)
}

impl Index {
    fn insert(&mut self, run: StageRun) {
        let run = trim(run);
        let Some(uid) = run.uid() else { return };
        self.remove(&uid);
        let spec = &run.spec;
        self.by_stage
            .entry((spec.pipeline.clone(), spec.stage.clone()))
            .or_default()
            .insert(uid.clone());
        self.by_build
            .entry((spec.pipeline.clone(), spec.pipeline_counter))
            .or_default()
            .insert(uid.clone());
        self.by_pipeline
            .entry(spec.pipeline.clone())
            .or_default()
            .insert(uid.clone());
        self.by_uid.insert(uid, Arc::new(run));
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else {
            return;
        };
        let spec = &old.spec;
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, BTreeSet<String>>,
            key: K,
            uid: &str,
        ) {
            if let Some(set) = map.get_mut(&key) {
                set.remove(uid);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        drop_from(
            &mut self.by_stage,
            (spec.pipeline.clone(), spec.stage.clone()),
            uid,
        );
        drop_from(
            &mut self.by_build,
            (spec.pipeline.clone(), spec.pipeline_counter),
            uid,
        );
        drop_from(&mut self.by_pipeline, spec.pipeline.clone(), uid);
    }

    fn collect(&self, uids: Option<&BTreeSet<String>>) -> Vec<Arc<StageRun>> {
        uids.into_iter()
            .flatten()
            .filter_map(|u| self.by_uid.get(u).cloned())
            .collect()
    }
}

/// StageRuns of the served namespaces, kept current by a watch.
pub struct StageRunCache {
    index: RwLock<Index>,
    namespaces: Vec<String>,
    synced: AtomicBool,
}

impl StageRunCache {
    /// An empty cache serving `namespaces` (all when empty).
    pub fn new(namespaces: Vec<String>) -> Self {
        StageRunCache {
            index: RwLock::new(Index::default()),
            namespaces,
            synced: AtomicBool::new(false),
        }
    }

    /// True when `run` is in a served namespace.
    pub fn serves(&self, run: &StageRun) -> bool {
        run.metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| self.serves_namespace(ns))
    }

    /// True when namespace `ns` is served.
    pub fn serves_namespace(&self, ns: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the first full list has been loaded.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn by_uid(&self, uid: &str) -> Option<Arc<StageRun>> {
        self.read().by_uid.get(uid).cloned()
    }

    /// Every run served.
    pub fn all(&self) -> Vec<Arc<StageRun>> {
        self.read().by_uid.values().cloned().collect()
    }

    /// Every run of a pipeline's stage.
    pub fn by_stage(&self, pipeline: &str, stage: &str) -> Vec<Arc<StageRun>> {
        let idx = self.read();
        idx.collect(idx.by_stage.get(&(pipeline.to_string(), stage.to_string())))
    }

    /// Every stage run of one pipeline run.
    pub fn by_build(&self, pipeline: &str, counter: i64) -> Vec<Arc<StageRun>> {
        let idx = self.read();
        idx.collect(idx.by_build.get(&(pipeline.to_string(), counter)))
    }

    /// Every stage run of a pipeline.
    pub fn by_pipeline(&self, pipeline: &str) -> Vec<Arc<StageRun>> {
        let idx = self.read();
        idx.collect(idx.by_pipeline.get(pipeline))
    }

    /// Applies one watch event.
    fn apply(&self, event: watcher::Event<StageRun>, pending: &mut Option<Index>) {
        match event {
            watcher::Event::Init => *pending = Some(Index::default()),
            watcher::Event::InitApply(run) => {
                if self.serves(&run) {
                    pending.get_or_insert_with(Index::default).insert(run);
                }
            }
            watcher::Event::InitDone => {
                *self.write() = pending.take().unwrap_or_default();
                self.synced.store(true, Ordering::Release);
            }
            watcher::Event::Apply(run) => {
                if self.serves(&run) {
                    self.write().insert(run);
                }
            }
            watcher::Event::Delete(run) => {
                if let Some(uid) = run.uid() {
                    self.write().remove(&uid);
                }
            }
        }
    }

    /// Keeps the cache current until the process ends; watch errors (410
    /// included) are retried with backoff and followed by a fresh list.
    pub async fn run(self: Arc<Self>, client: Client) {
        let api: Api<StageRun> = match self.namespaces.as_slice() {
            [one] => Api::namespaced(client, one),
            _ => Api::all(client),
        };
        let mut stream = watcher(api, watcher::Config::default())
            .backoff(crate::watch::backoff())
            .boxed();
        let mut pending = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(ev) => self.apply(ev, &mut pending),
                Err(e) => tracing::warn!(error = %e, "StageRun watch failed; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, ns: &str, pipeline: &str, counter: i64, stage: &str) -> StageRun {
        serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
            "spec": {"pipeline": pipeline, "pipelineCounter": counter, "stage": stage,
                     "jobs": [{"name": "j", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn kept_runs_lose_what_no_endpoint_reads() {
        let mut sr = run("foo-1-dev", "a", "foo", 1, "DEV");
        sr.metadata.managed_fields = Some(vec![Default::default()]);
        sr.spec.jobs[0].template = json!({"metadata": {"labels": {"a": "b"}},
            "spec": {"volumes": [{"name": "v"}], "containers": [
                {"name": "c", "image": "i", "env": [{"name": "K", "value": "V"}]}]}});
        sr.metadata.annotations = Some(
            [
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
                ("team", "web"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let cache = StageRunCache::new(vec!["a".into()]);
        let mut pending = None;
        cache.apply(watcher::Event::Init, &mut pending);
        cache.apply(watcher::Event::InitApply(sr), &mut pending);
        cache.apply(watcher::Event::InitDone, &mut pending);
        let kept = cache.by_uid("uid-a-foo-1-dev").unwrap();
        assert!(kept.metadata.managed_fields.is_none());
        let annotations = kept.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        assert_eq!(
            kept.spec.jobs[0].template,
            json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
            "what Cloud Foundry shows of the first container, nothing else"
        );
    }

    #[test]
    fn indexes_follow_the_watch() {
        let cache = StageRunCache::new(vec!["a".into(), "b".into()]);
        let mut pending = None;
        assert!(!cache.is_synced());
        cache.apply(watcher::Event::Init, &mut pending);
        cache.apply(
            watcher::Event::InitApply(run("foo-1-dev", "a", "foo", 1, "DEV")),
            &mut pending,
        );
        cache.apply(
            watcher::Event::InitApply(run("foo-2-dev", "b", "foo", 2, "DEV")),
            &mut pending,
        );
        cache.apply(
            watcher::Event::InitApply(run("other", "c", "foo", 3, "DEV")),
            &mut pending,
        );
        assert_eq!(cache.len(), 0, "nothing visible before the list completes");
        cache.apply(watcher::Event::InitDone, &mut pending);
        assert!(cache.is_synced());
        assert_eq!(cache.len(), 2, "namespace c is not served");
        assert_eq!(cache.by_stage("foo", "DEV").len(), 2);
        assert_eq!(cache.by_build("foo", 2).len(), 1);
        assert!(cache.by_uid("uid-a-foo-1-dev").is_some());

        cache.apply(
            watcher::Event::Apply(run("foo-2-uat", "b", "foo", 2, "UATTest")),
            &mut pending,
        );
        assert_eq!(cache.by_build("foo", 2).len(), 2);
        assert_eq!(cache.by_pipeline("foo").len(), 3);
        assert_eq!(cache.all().len(), 3);
        cache.apply(
            watcher::Event::Delete(run("foo-2-dev", "b", "foo", 2, "DEV")),
            &mut pending,
        );
        assert_eq!(cache.by_stage("foo", "DEV").len(), 1);
        assert!(cache.by_stage("foo", "nope").is_empty());

        // A relist replaces everything.
        cache.apply(watcher::Event::Init, &mut pending);
        cache.apply(
            watcher::Event::InitApply(run("bar-1-x", "a", "bar", 1, "X")),
            &mut pending,
        );
        cache.apply(watcher::Event::InitDone, &mut pending);
        assert_eq!(cache.len(), 1);
        assert!(cache.by_pipeline("foo").is_empty());
    }
}
