//! Several namespaces' watches feeding one store, for a controller that may
//! list and watch only in the namespaces it was given (a Role in each, no
//! cluster-wide rights).
//!
//! A store takes a list as a whole: `Init`, the objects, then `InitDone`
//! replaces everything it held. Each namespace's watch lists on its own, so
//! their events cannot simply be interleaved: one namespace's relist would
//! wipe the others from the store. Instead:
//!
//! - the first lists, one namespace after the other, form one list of the
//!   store: one `Init`, every namespace's objects, one `InitDone` once the
//!   last is listed, so that the store is ready only when every namespace is
//!   cached;
//! - a later relist of one namespace (its watch expired or broke) reaches the
//!   store as changes: each listed object as an `Apply`, and a `Delete` for
//!   each of that namespace's cached objects the list no longer holds. The
//!   other namespaces go on being watched meanwhile;
//! - a first list that fails part-way and starts again may have passed on
//!   objects deleted before the new list; they are deleted from the store
//!   once it is ready.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};

/// One namespace's watch events.
pub type Feed<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

enum Phase<K: Resource<DynamicType = ()>> {
    /// The first lists: namespace `at` is listing (the only one polled).
    First {
        at: usize,
        /// Objects passed on by its current list, and by the lists of it
        /// that failed part-way.
        listed: HashSet<ObjectRef<K>>,
        failed: HashSet<ObjectRef<K>>,
    },
    /// Every namespace is watched; the sets are of the namespaces that are
    /// relisting, the objects their list has passed on so far.
    Watching {
        relisting: Vec<Option<HashSet<ObjectRef<K>>>>,
    },
}

/// The merged stream; see the module's documentation.
pub struct Merged<K: Resource<DynamicType = ()> + Clone + 'static> {
    namespaces: Vec<String>,
    feeds: Vec<Feed<K>>,
    /// The store these events are applied to: what a relist's deletions are
    /// found in.
    store: Store<K>,
    phase: Phase<K>,
    queue: VecDeque<Event<K>>,
    /// Objects to delete once the store is ready (see the module's
    /// documentation); looked up when their turn comes.
    gone: Vec<ObjectRef<K>>,
    /// Where the next round of polling starts, so that a busy namespace
    /// cannot starve the others.
    next: usize,
}

// Nothing is pinned in place: the feeds are boxed.
impl<K: Resource<DynamicType = ()> + Clone + 'static> Unpin for Merged<K> {}

/// Merges `feeds` (one per namespace, in the order of `namespaces`) for the
/// store `store` is read from.
pub fn merge<K>(namespaces: Vec<String>, feeds: Vec<Feed<K>>, store: Store<K>) -> Merged<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    assert_eq!(namespaces.len(), feeds.len());
    Merged {
        namespaces,
        feeds,
        store,
        phase: Phase::First {
            at: 0,
            listed: HashSet::new(),
            failed: HashSet::new(),
        },
        queue: VecDeque::from([Event::Init]),
        gone: Vec::new(),
        next: 0,
    }
}

impl<K> Merged<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The next event of any namespace, polling each in turn.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, WatchItem<K>)>> {
        let n = self.feeds.len();
        let mut ended = 0;
        for k in 0..n {
            let i = (self.next + k) % n;
            match self.feeds[i].poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some((i, item)));
                }
                Poll::Ready(None) => ended += 1,
                Poll::Pending => {}
            }
        }
        if ended == n {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// A relist of namespace `i` has ended: its cached objects that the list
    /// did not hold are gone.
    fn relisted(&mut self, i: usize, listed: &HashSet<ObjectRef<K>>) {
        let ns = self.namespaces[i].as_str();
        for obj in self.store.state() {
            if obj.meta().namespace.as_deref() == Some(ns)
                && !listed.contains(&ObjectRef::from_obj(obj.as_ref()))
            {
                self.queue.push_back(Event::Delete(obj.as_ref().clone()));
            }
        }
    }
}

type WatchItem<K> = Result<Event<K>, watcher::Error>;

impl<K> Stream for Merged<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    type Item = WatchItem<K>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            let (i, item) = match &mut this.phase {
                Phase::First { at, .. } => match this.feeds[*at].poll_next_unpin(cx) {
                    Poll::Ready(Some(item)) => (*at, item),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Watching { .. } => {
                    // Applied to the store by now (the events before them were).
                    if let Some(r) = this.gone.pop() {
                        if let Some(obj) = this.store.get(&r) {
                            return Poll::Ready(Some(Ok(Event::Delete(obj.as_ref().clone()))));
                        }
                        continue;
                    }
                    match this.poll_any(cx) {
                        Poll::Ready(Some(next)) => next,
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            };
            let event = match item {
                Ok(event) => event,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            let n = this.feeds.len();
            match &mut this.phase {
                Phase::First { at, listed, failed } => match event {
                    // (Again, after a failed attempt: what it passed on may be gone.)
                    Event::Init => failed.extend(listed.drain()),
                    Event::InitApply(obj) => {
                        listed.insert(ObjectRef::from_obj(&obj));
                        this.queue.push_back(Event::InitApply(obj));
                    }
                    Event::InitDone => {
                        this.gone
                            .extend(failed.drain().filter(|r| !listed.contains(r)));
                        listed.clear();
                        *at += 1;
                        if *at == n {
                            this.phase = Phase::Watching {
                                relisting: (0..n).map(|_| None).collect(),
                            };
                            this.queue.push_back(Event::InitDone);
                        }
                    }
                    // A watch changes nothing before its first list is done.
                    other => this.queue.push_back(other),
                },
                Phase::Watching { relisting } => match event {
                    Event::Init => relisting[i] = Some(HashSet::new()),
                    Event::InitApply(obj) => {
                        if let Some(listed) = relisting[i].as_mut() {
                            listed.insert(ObjectRef::from_obj(&obj));
                        }
                        this.queue.push_back(Event::Apply(obj));
                    }
                    Event::InitDone => {
                        if let Some(listed) = relisting[i].take() {
                            this.relisted(i, &listed);
                        }
                    }
                    other => this.queue.push_back(other),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::channel::mpsc;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::runtime::reflector::{self, store::Writer};

    type Tx = mpsc::UnboundedSender<WatchItem<Pod>>;

    fn pod(ns: &str, name: &str, version: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = Some(version.into());
        p
    }

    struct World {
        tx: Vec<Tx>,
        store: Store<Pod>,
        events: Pin<Box<dyn Stream<Item = WatchItem<Pod>> + Send>>,
        seen: Vec<String>,
    }

    fn world(namespaces: &[&str]) -> World {
        let writer: Writer<Pod> = Writer::default();
        let store = writer.as_reader();
        let mut tx = Vec::new();
        let mut feeds: Vec<Feed<Pod>> = Vec::new();
        for _ in namespaces {
            let (t, r) = mpsc::unbounded();
            tx.push(t);
            feeds.push(r.boxed());
        }
        let merged = merge(
            namespaces.iter().map(|s| s.to_string()).collect(),
            feeds,
            store.clone(),
        );
        World {
            tx,
            store,
            events: reflector::reflector(writer, merged).boxed(),
            seen: Vec::new(),
        }
    }

    impl World {
        fn send(&self, i: usize, event: Event<Pod>) {
            self.tx[i].unbounded_send(Ok(event)).expect("send");
        }

        /// Polls until nothing more is ready; what came out, in short.
        fn drain(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Some(Some(item)) = self.events.next().now_or_never() {
                out.push(match item {
                    Ok(Event::Init) => "Init".to_string(),
                    Ok(Event::InitDone) => "InitDone".to_string(),
                    Ok(Event::InitApply(p)) => format!("InitApply {}", p.name_any()),
                    Ok(Event::Apply(p)) => format!("Apply {}", p.name_any()),
                    Ok(Event::Delete(p)) => format!("Delete {}", p.name_any()),
                    Err(e) => format!("Err {e}"),
                });
            }
            self.seen.extend(out.clone());
            out
        }

        fn cached(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .store
                .state()
                .iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                .collect();
            names.sort();
            names
        }

        fn ready(&self) -> bool {
            self.store.wait_until_ready().now_or_never().is_some()
        }
    }

    #[test]
    fn the_first_lists_of_every_namespace_make_one_list() {
        let mut w = world(&["a", "b"]);
        w.send(0, Event::Init);
        w.send(0, Event::InitApply(pod("a", "a1", "1")));
        w.send(1, Event::Init);
        w.send(1, Event::InitApply(pod("b", "b1", "1")));
        // b has listed, but is not polled before a is done.
        w.send(1, Event::InitDone);
        assert_eq!(w.drain(), ["Init", "InitApply a1"]);
        assert!(!w.ready(), "ready before every namespace is listed");
        w.send(0, Event::InitDone);
        assert_eq!(w.drain(), ["InitApply b1", "InitDone"]);
        assert!(w.ready());
        assert_eq!(w.cached(), ["a/a1", "b/b1"]);
        // Then both are watched.
        w.send(1, Event::Apply(pod("b", "b2", "2")));
        w.send(0, Event::Delete(pod("a", "a1", "2")));
        let mut out = w.drain();
        out.sort();
        assert_eq!(out, ["Apply b2", "Delete a1"]);
        assert_eq!(w.cached(), ["b/b1", "b/b2"]);
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_others_cached_and_drops_what_it_lost() {
        let mut w = world(&["a", "b"]);
        for (i, ns) in ["a", "b"].iter().enumerate() {
            w.send(i, Event::Init);
            w.send(i, Event::InitApply(pod(ns, &format!("{ns}1"), "1")));
            w.send(i, Event::InitApply(pod(ns, &format!("{ns}2"), "1")));
            w.send(i, Event::InitDone);
        }
        w.drain();
        assert_eq!(w.cached(), ["a/a1", "a/a2", "b/b1", "b/b2"]);

        // b's watch expired: b2 was deleted meanwhile, b3 created; a goes on.
        w.send(1, Event::Init);
        w.send(1, Event::InitApply(pod("b", "b1", "5")));
        w.send(0, Event::Apply(pod("a", "a3", "5")));
        w.send(1, Event::InitApply(pod("b", "b3", "5")));
        w.send(1, Event::InitDone);
        let out = w.drain();
        assert!(!out.iter().any(|e| e.starts_with("Init")), "{out:?}");
        assert!(out.contains(&"Delete b2".to_string()), "{out:?}");
        assert_eq!(w.cached(), ["a/a1", "a/a2", "a/a3", "b/b1", "b/b3"]);
    }

    #[test]
    fn a_first_list_that_failed_part_way_leaves_nothing_it_passed_on_that_is_gone() {
        let mut w = world(&["a", "b"]);
        w.send(0, Event::Init);
        w.send(0, Event::InitApply(pod("a", "a1", "1")));
        w.send(0, Event::InitDone);
        w.send(1, Event::Init);
        w.send(1, Event::InitApply(pod("b", "old", "1")));
        w.tx[1]
            .unbounded_send(Err(watcher::Error::NoResourceVersion))
            .expect("send");
        // The list starts again; `old` was deleted in between.
        w.send(1, Event::Init);
        w.send(1, Event::InitApply(pod("b", "b1", "2")));
        w.send(1, Event::InitDone);
        let out = w.drain();
        assert_eq!(out.iter().filter(|e| *e == "Init").count(), 1, "{out:?}");
        assert!(out.contains(&"Delete old".to_string()), "{out:?}");
        assert_eq!(w.cached(), ["a/a1", "b/b1"]);
        assert!(w.ready());
    }
}
