//! One history from two places: the runs still in the cluster (the watch
//! cache) and those the controller has moved to the archive. A run is in
//! one or the other, but for a moment in both (archived, not yet deleted):
//! the reads ask the archive for its runs without the cluster's uids, so
//! that the cluster's copy is the one shown.
//!
//! Pages are cut from the merge of two lists in one order: the cluster's
//! runs whole (few: active and retained ones) and a window of the archive's
//! that is sure to hold every archived run of the page ([`archive_window`]).

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::crd::StageRun;

/// GoCD's stage-history order, newest first: pipeline counter, stage
/// counter, then creation time, name and uid as tie-breaks, so that the
/// order is total. The archive orders its rows the same way (its
/// `newest_first!` query text).
pub fn newest_first(a: &StageRun, b: &StageRun) -> Ordering {
    fn key(r: &StageRun) -> (i64, i64, Option<Timestamp>, Option<&str>, Option<&str>) {
        (
            r.spec.pipeline_counter,
            r.spec.stage_counter,
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            r.metadata.name.as_deref(),
            r.metadata.uid.as_deref(),
        )
    }
    key(b).cmp(&key(a))
}

/// Which archived runs (offset and count, in the merged order) a page of
/// `size` from `offset` can hold, when `in_cluster` runs come from the
/// cluster: before the page lie `offset` runs, of which at most
/// `in_cluster` are the cluster's, so at least `offset - in_cluster` are
/// archived ones, and at most `offset + size` archived runs come first.
pub fn archive_window(offset: usize, size: usize, in_cluster: usize) -> (usize, usize) {
    let start = offset.saturating_sub(in_cluster);
    (start, offset.saturating_add(size) - start)
}

/// The page of `size` from `offset` of the merged history, given the
/// cluster's runs (all of them, sorted [`newest_first`]) and the archive's
/// window (sorted, starting at `window_start` as [`archive_window`] gives).
///
/// Why the cut is right: merge the two into one list `L`. An archived run
/// before the window lies before the page, and a cluster run that sorts
/// before the window's first run lies before the page too; every other
/// run of `L` at index `i` has `window_start + i` runs before it in the
/// whole history. So the page is `L[offset - window_start ..]`.
pub fn merged_page(
    cluster: &[Arc<StageRun>],
    archived: Vec<StageRun>,
    window_start: usize,
    offset: usize,
    size: usize,
) -> Vec<Arc<StageRun>> {
    merged_window(
        cluster.to_vec(),
        archived.into_iter().map(Arc::new),
        window_start,
        offset,
        size,
        |a, b| newest_first(a, b),
    )
}

/// [`merged_page`] of anything in any total `order`: the cluster's
/// entries whole, the archive's window from `window_start`. The cluster's
/// come first on a tie.
pub fn merged_window<T>(
    cluster: Vec<T>,
    archived: impl IntoIterator<Item = T>,
    window_start: usize,
    offset: usize,
    size: usize,
    order: impl Fn(&T, &T) -> Ordering,
) -> Vec<T> {
    let mut merged = cluster;
    merged.extend(archived);
    // Stable: on a tie the cluster's entry stays first.
    merged.sort_by(order);
    merged
        .into_iter()
        .skip(offset.saturating_sub(window_start))
        .take(size)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(uid: &str, pipeline_counter: i64, stage_counter: i64) -> StageRun {
        serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": format!("foo-{pipeline_counter}-dev"), "namespace": "ns", "uid": uid,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"pipeline": "foo", "pipelineCounter": pipeline_counter, "stage": "DEV",
                     "stageCounter": stage_counter,
                     "jobs": [{"name": "j", "template": {}}]}
        }))
        .expect("stagerun")
    }

    fn uids(runs: &[Arc<StageRun>]) -> Vec<String> {
        runs.iter().filter_map(|r| r.metadata.uid.clone()).collect()
    }

    /// Every way of splitting a history between cluster and archive, every
    /// offset: the page is the page of the whole.
    #[test]
    fn pages_of_the_merge_are_pages_of_the_whole() {
        let whole: Vec<StageRun> = (1..=13)
            .flat_map(|pc| (1..=2).map(move |sc| run(&format!("u{pc}-{sc}"), pc, sc)))
            .collect();
        let mut sorted: Vec<Arc<StageRun>> = whole.iter().cloned().map(Arc::new).collect();
        sorted.sort_by(|a, b| newest_first(a, b));
        // Which runs stay in the cluster: none, all, the newest, the
        // oldest, every third.
        let splits: Vec<Box<dyn Fn(usize) -> bool>> = vec![
            Box::new(|_| false),
            Box::new(|_| true),
            Box::new(|i| i < 4),
            Box::new(|i| i >= 20),
            Box::new(|i| i % 3 == 0),
        ];
        for (n, in_cluster) in splits.iter().enumerate() {
            let cluster: Vec<Arc<StageRun>> = (sorted.iter().enumerate())
                .filter(|(i, _)| in_cluster(*i))
                .map(|(_, r)| r.clone())
                .collect();
            let archived: Vec<StageRun> = (sorted.iter().enumerate())
                .filter(|(i, _)| !in_cluster(*i))
                .map(|(_, r)| (**r).clone())
                .collect();
            for size in [1, 10] {
                for offset in 0..=30 {
                    let (start, count) = archive_window(offset, size, cluster.len());
                    let window: Vec<StageRun> =
                        archived.iter().skip(start).take(count).cloned().collect();
                    let page = merged_page(&cluster, window, start, offset, size);
                    let expected: Vec<Arc<StageRun>> =
                        sorted.iter().skip(offset).take(size).cloned().collect();
                    assert_eq!(
                        uids(&page),
                        uids(&expected),
                        "split {n}, offset {offset}, size {size}"
                    );
                }
            }
        }
    }

    /// The same for a pipeline's counters (GoCD's pipeline history): the
    /// cluster's counters and the archive's, disjoint, newest first.
    #[test]
    fn pages_of_merged_counters_are_pages_of_the_whole() {
        let whole: Vec<i64> = (1..=25).rev().collect();
        for split in [0, 1, 2, 3, 5, 7] {
            let cluster: Vec<i64> = whole
                .iter()
                .copied()
                .filter(|c| split > 0 && c % split == 0)
                .collect();
            let archived: Vec<i64> = whole
                .iter()
                .copied()
                .filter(|c| !cluster.contains(c))
                .collect();
            for size in [1, 10] {
                for offset in 0..=30 {
                    let (start, count) = archive_window(offset, size, cluster.len());
                    let window: Vec<i64> =
                        archived.iter().copied().skip(start).take(count).collect();
                    let page =
                        merged_window(cluster.clone(), window, start, offset, size, |a, b| {
                            b.cmp(a)
                        });
                    let expected: Vec<i64> =
                        whole.iter().copied().skip(offset).take(size).collect();
                    assert_eq!(
                        page, expected,
                        "split {split}, offset {offset}, size {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn ties_are_broken_by_name_then_uid() {
        let a = run("a", 1, 1);
        let b = run("b", 1, 1);
        assert_eq!(newest_first(&a, &b), Ordering::Greater);
        assert_eq!(newest_first(&run("x", 2, 1), &a), Ordering::Less);
        assert_eq!(newest_first(&run("x", 1, 2), &a), Ordering::Less);
    }
}
