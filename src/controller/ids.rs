//! Stable numeric ids for stage and job runs (GoCD's `id` fields): two
//! counters kept in a ConfigMap, advanced with optimistic concurrency so that
//! concurrent allocators never hand out the same id.
//!
//! The ConfigMap is written once per block of ids, not once per StageRun:
//! an allocator reserves a block and hands it out from memory. Ids stay
//! unique (blocks never overlap) and increasing (a new block starts past
//! every earlier reservation, also one made by a replica or a process that
//! has since stopped); ids left in a block when its process stops are
//! skipped, like GoCD's own gaps.
//!
//! A block also starts past every id the cluster's StageRuns carry and,
//! with an archive, past every archived id, so that ids never go backwards
//! when the ConfigMap is lost (a reinstall, a deletion) or edited into
//! something that does not parse, or back.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use super::cache::Cache;
use crate::archive::Archive;
use crate::crd::StageRun;
use crate::{Error, Result, Step, labels};

/// Ids stay exact in JSON consumers that use doubles.
pub const MAX_ID: i64 = 1 << 53;

const STAGE_KEY: &str = "stage";
const JOB_KEY: &str = "job";

/// Stage ids reserved per ConfigMap write.
pub const STAGE_BLOCK: i64 = 100;
/// Job ids reserved per ConfigMap write (at least what one stage needs).
pub const JOB_BLOCK: i64 = 400;

/// Ids reserved and not handed out yet: `next..=last`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    next: i64,
    last: i64,
}

impl Default for Range {
    /// Nothing reserved.
    fn default() -> Self {
        Range { next: 1, last: 0 }
    }
}

impl Range {
    fn remaining(&self) -> i64 {
        (self.last - self.next + 1).max(0)
    }

    fn take(&mut self, n: i64) -> (i64, i64) {
        let first = self.next;
        self.next += n;
        (first, first + n - 1)
    }
}

#[derive(Debug, Default)]
struct Reserved {
    stages: Range,
    jobs: Range,
}

/// Allocates ids from the ConfigMap `name`.
pub struct IdAllocator {
    api: Api<ConfigMap>,
    name: String,
    /// Held across a reservation so that concurrent reconciles share one
    /// ConfigMap write instead of racing for it.
    reserved: tokio::sync::Mutex<Reserved>,
    /// Ids are floored above the archive's highest.
    archive: Option<Arc<Archive>>,
    /// And above the highest of the runs in the cluster.
    runs: Option<Arc<Cache<StageRun>>>,
}

/// What the archive says of the ids it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Floor {
    /// No archive is configured.
    NoArchive,
    /// The highest archived stage and job ids.
    Archived(i64, i64),
    /// The archive did not answer.
    Unknown,
}

/// Where the counters continue from: past what the ConfigMap says
/// (`None`: missing or not a number), past every id in the cluster
/// (`cluster`, the highest stage and job ids there) and past every
/// archived id. Without the archive's answer, counters that read are
/// trusted (they passed every id handed out since they were written);
/// missing ones are not (`None`: wait for the archive).
fn continue_from(
    counters: (Option<i64>, Option<i64>),
    cluster: (i64, i64),
    floor: Floor,
) -> Option<(i64, i64)> {
    let (stage, job) = match floor {
        Floor::NoArchive => (counters.0.unwrap_or(0), counters.1.unwrap_or(0)),
        Floor::Archived(s, j) => (
            counters.0.unwrap_or(0).max(s),
            counters.1.unwrap_or(0).max(j),
        ),
        Floor::Unknown => counters.0.zip(counters.1)?,
    };
    Some((stage.max(cluster.0), job.max(cluster.1)))
}

/// The highest stage id and job id among `runs` (0 when none).
fn highest_ids<'a>(runs: impl IntoIterator<Item = &'a StageRun>) -> (i64, i64) {
    let mut highest = (0, 0);
    for status in runs.into_iter().filter_map(|r| r.status.as_ref()) {
        highest.0 = highest.0.max(status.id.unwrap_or(0));
        highest.1 = (status.jobs.iter().map(|j| j.id)).fold(highest.1, i64::max);
    }
    highest
}

impl IdAllocator {
    pub fn new(
        api: Api<ConfigMap>,
        name: impl Into<String>,
        archive: Option<Arc<Archive>>,
        runs: Option<Arc<Cache<StageRun>>>,
    ) -> Self {
        IdAllocator {
            api,
            name: name.into(),
            reserved: tokio::sync::Mutex::new(Reserved::default()),
            archive,
            runs,
        }
    }

    /// The highest ids of the runs in the cluster, asked before each block.
    fn cluster_floor(&self) -> (i64, i64) {
        match &self.runs {
            Some(runs) => highest_ids(runs.store().state().iter().map(|r| &**r)),
            None => (0, 0),
        }
    }

    /// The archive's highest ids, asked before each block.
    async fn floor(&self) -> Floor {
        let Some(archive) = &self.archive else {
            return Floor::NoArchive;
        };
        match archive.max_ids().await {
            Ok((stage, job)) => Floor::Archived(stage, job),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the archive's highest ids");
                Floor::Unknown
            }
        }
    }

    /// One stage id and `jobs` job ids.
    pub async fn allocate(&self, jobs: usize) -> Result<(i64, Vec<i64>)> {
        let jobs = jobs as i64;
        let mut reserved = self.reserved.lock().await;
        if reserved.stages.remaining() < 1 || reserved.jobs.remaining() < jobs {
            let (stages, job_ids) = self.reserve(STAGE_BLOCK, JOB_BLOCK.max(jobs)).await?;
            *reserved = Reserved {
                stages,
                jobs: job_ids,
            };
        }
        let (stage, _) = reserved.stages.take(1);
        let (first, last) = reserved.jobs.take(jobs);
        Ok((stage, (first..=last).collect()))
    }

    /// Advances the counters by a block each; returns the blocks.
    async fn reserve(&self, stages: i64, jobs: i64) -> Result<(Range, Range)> {
        let floor = self.floor().await;
        let cluster = self.cluster_floor();
        loop {
            let current = match self
                .api
                .get_opt(&self.name)
                .await
                .step("read the id ConfigMap")?
            {
                Some(cm) => cm,
                None => {
                    // A lost ConfigMap starts again past every archived id.
                    let Some((stage, job)) = continue_from((None, None), cluster, floor) else {
                        return Err(Error::IdsUnfloored);
                    };
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            labels: Some(BTreeMap::from([(
                                labels::MANAGED_BY.into(),
                                labels::MANAGER.into(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([
                            (STAGE_KEY.into(), stage.to_string()),
                            (JOB_KEY.into(), job.to_string()),
                        ])),
                        ..ConfigMap::default()
                    };
                    match self.api.create(&PostParams::default(), &cm).await {
                        Ok(_) => continue,
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(e).step("create the id ConfigMap"),
                    }
                }
            };
            let read = |key: &str| -> Option<i64> {
                current
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .and_then(|v| v.parse().ok())
            };
            let Some((stage, job)) =
                continue_from((read(STAGE_KEY), read(JOB_KEY)), cluster, floor)
            else {
                return Err(Error::IdsUnfloored);
            };
            // The counters are a ConfigMap anyone with access may edit.
            let (Some(next_stage), Some(next_job)) = (
                stage.checked_add(stages).filter(|n| *n <= MAX_ID),
                job.checked_add(jobs).filter(|n| *n <= MAX_ID),
            ) else {
                return Err(Error::IdsExhausted);
            };
            let mut updated = current.clone();
            let data = updated.data.get_or_insert_with(BTreeMap::new);
            data.insert(STAGE_KEY.into(), next_stage.to_string());
            data.insert(JOB_KEY.into(), next_job.to_string());
            // `replace` carries the resourceVersion read above: a concurrent
            // allocation makes it fail with 409, and we read again.
            match self
                .api
                .replace(&self.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    return Ok((
                        Range {
                            next: stage + 1,
                            last: next_stage,
                        },
                        Range {
                            next: job + 1,
                            last: next_job,
                        },
                    ));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e).step("advance the id counters"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_hands_out_each_id_once_in_order() {
        let mut r = Range { next: 1, last: 4 };
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.take(1), (1, 1));
        assert_eq!(r.take(3), (2, 4));
        assert_eq!(r.remaining(), 0);
        assert_eq!(Range::default().remaining(), 0);
    }

    #[test]
    fn counters_continue_past_every_archived_id() {
        use Floor::*;
        let none = (0, 0);
        // As before an archive existed.
        assert_eq!(
            continue_from((Some(5), Some(9)), none, NoArchive),
            Some((5, 9))
        );
        assert_eq!(
            continue_from((None, Some(9)), none, NoArchive),
            Some((0, 9))
        );
        // The ConfigMap behind the archive (lost, recreated, edited back).
        assert_eq!(
            continue_from((Some(5), Some(9)), none, Archived(700, 2000)),
            Some((700, 2000))
        );
        assert_eq!(
            continue_from((None, None), none, Archived(700, 2000)),
            Some((700, 2000))
        );
        // Ahead of it: the counters hold.
        assert_eq!(
            continue_from((Some(800), Some(2100)), none, Archived(700, 2000)),
            Some((800, 2100))
        );
        // The archive away: counters that read are trusted, missing or
        // unreadable ones are not.
        assert_eq!(
            continue_from((Some(5), Some(9)), none, Unknown),
            Some((5, 9))
        );
        assert_eq!(continue_from((None, Some(9)), none, Unknown), None);
        assert_eq!(continue_from((None, None), none, Unknown), None);
    }

    #[test]
    fn counters_continue_past_every_id_in_the_cluster() {
        use Floor::*;
        let cluster = (40, 90);
        // A reinstall without an archive, its old runs still there.
        assert_eq!(
            continue_from((None, None), cluster, NoArchive),
            Some((40, 90))
        );
        // Counters edited back, or behind in one of the two.
        assert_eq!(
            continue_from((Some(5), Some(95)), cluster, NoArchive),
            Some((40, 95))
        );
        assert_eq!(
            continue_from((Some(5), Some(9)), cluster, Unknown),
            Some((40, 90))
        );
        // The higher of the cluster and the archive.
        assert_eq!(
            continue_from((None, None), cluster, Archived(30, 100)),
            Some((40, 100))
        );
        // Without the archive's answer a lost ConfigMap still waits: the
        // archive may hold higher ids than the cluster.
        assert_eq!(continue_from((None, None), cluster, Unknown), None);
    }

    #[test]
    fn the_cluster_floor_is_the_highest_stage_and_job_id() {
        let run = |status: serde_json::Value| -> StageRun {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
                "metadata": {"name": "r", "namespace": "ns"},
                "spec": {"pipeline": "p", "pipelineCounter": 1, "stage": "s",
                         "jobs": [{"name": "a", "template": {}}]},
                "status": status
            }))
            .expect("stagerun")
        };
        let runs = [
            run(serde_json::json!({"id": 7, "jobs": [
                {"name": "a", "id": 30, "state": "Completed", "result": "Passed"},
                {"name": "b", "id": 12, "state": "Completed", "result": "Passed"}]})),
            run(serde_json::json!({"id": 9, "jobs": []})),
            run(serde_json::json!({})),
        ];
        assert_eq!(highest_ids(&runs), (9, 30));
        assert_eq!(highest_ids(&[]), (0, 0));
    }
}
