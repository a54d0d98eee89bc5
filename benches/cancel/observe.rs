//! Watch-fed views of objects, so that a figure ends the moment its
//! condition holds without polling the API server (LISTs of thousands of
//! objects would load the very server being measured).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

/// Summaries of the objects a watch selects, keyed by name, complete once
/// the initial list has been read.
pub struct Observed<S> {
    state: Arc<Mutex<View<S>>>,
    changed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

struct View<S> {
    synced: bool,
    objects: HashMap<String, S>,
    /// Objects listed since the last restart of the watch, swapped in at InitDone.
    relist: HashMap<String, S>,
}

impl<S> Drop for Observed<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `api` (filtered by `config`), keeping `summary(obj)` of each object.
pub fn observe<K, S>(api: Api<K>, config: watcher::Config, summary: fn(&K) -> S) -> Observed<S>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    S: Send + 'static,
{
    observe_with(watcher::watcher(api, config), summary)
}

/// The same for dynamic objects, whose watch needs no `Default` type information.
pub fn observe_dynamic<S>(
    api: Api<kube::api::DynamicObject>,
    config: watcher::Config,
    summary: fn(&kube::api::DynamicObject) -> S,
) -> Observed<S>
where
    S: Send + 'static,
{
    observe_with(watcher::watcher(api, config), summary)
}

fn observe_with<K, S>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    summary: fn(&K) -> S,
) -> Observed<S>
where
    K: Resource + Send + 'static,
    S: Send + 'static,
{
    let state = Arc::new(Mutex::new(View {
        synced: false,
        objects: HashMap::new(),
        relist: HashMap::new(),
    }));
    let (tx, changed) = watch::channel(0u64);
    let view = state.clone();
    let task = tokio::spawn(async move {
        let mut events = stream.default_backoff().boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("bench: watch error (retrying): {e}");
                    continue;
                }
            };
            {
                let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    watcher::Event::Apply(o) => {
                        v.objects.insert(o.name_any(), summary(&o));
                    }
                    watcher::Event::Delete(o) => {
                        v.objects.remove(&o.name_any());
                    }
                    watcher::Event::Init => v.relist.clear(),
                    watcher::Event::InitApply(o) => {
                        v.relist.insert(o.name_any(), summary(&o));
                    }
                    watcher::Event::InitDone => {
                        let fresh = std::mem::take(&mut v.relist);
                        v.objects = fresh;
                        v.synced = true;
                    }
                }
            }
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    Observed {
        state,
        changed,
        task,
    }
}

/// A wait that did not end before its deadline.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
    /// What the condition last reported (e.g. how many are done).
    pub last: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:.0} s waiting for {} ({})",
            self.after.as_secs_f64(),
            self.what,
            self.last
        )
    }
}

impl std::error::Error for TimedOut {}

impl<S> Observed<S> {
    /// Waits until `pending` returns `None` (the condition holds); it returns
    /// `Some(note)` saying what is still missing. Returns the instant the
    /// condition was seen to hold. Progress goes to stderr every 15 s.
    pub async fn until(
        &self,
        what: &str,
        timeout: Duration,
        pending: impl Fn(&HashMap<String, S>) -> Option<String>,
    ) -> Result<Instant, TimedOut> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut changed = self.changed.clone();
        let mut next_report = start + Duration::from_secs(15);
        loop {
            let note = {
                let v = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if v.synced {
                    pending(&v.objects)
                } else {
                    Some("watch not yet synced".to_string())
                }
            };
            let Some(note) = note else {
                return Ok(Instant::now());
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(TimedOut {
                    what: what.to_string(),
                    after: now - start,
                    last: note,
                });
            }
            if now >= next_report {
                eprintln!(
                    "bench: still waiting for {what} after {:.0} s: {note}",
                    (now - start).as_secs_f64()
                );
                next_report = now + Duration::from_secs(15);
            }
            // Woken by the next event; the timer bounds the wait for the
            // deadline and the progress line.
            if let Ok(Err(_)) =
                tokio::time::timeout_at(deadline.min(next_report), changed.changed()).await
            {
                // The watch task ended (it only does when aborted): poll.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A copy of what is known now, for building work lists from the view.
    pub fn snapshot<T>(&self, f: impl Fn(&HashMap<String, S>) -> T) -> T {
        let v = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&v.objects)
    }
}
