//! Reads of archived runs for Huawei CodeArts Build and CrafterCMS
//! Studio. A CodeArts build is every StageRun of one pipeline counter (the
//! build number) of a build task (a pipeline), so its history pages build
//! numbers, not rows; a Studio package is one StageRun of a site (a
//! pipeline), and its queue pages runs.

use serde_json::Value;

use super::{Archive, Page, Timed, decoded};
use crate::Result;
use crate::crd::StageRun;

/// A page of a build task's archived build numbers, newest first, and how
/// many there are in all.
#[derive(Debug, Default)]
pub struct BuildPage {
    pub numbers: Vec<i64>,
    pub total: i64,
}

/// The builds of task `$2` in namespaces `$1` (all when empty) whose number
/// is not one of `$3` (those the caller has from the cluster, so that the
/// two lists of builds are disjoint) and that started at `$4` or later: the
/// earliest start of their runs, those without one aside, as CodeArts'
/// history filters builds (`sidecar::codearts::build_record`). Candidates
/// are builds with a run started since (an index range); a build with a run
/// started before is dropped.
macro_rules! builds_since {
    () => {
        "WITH builds AS ( \
           SELECT DISTINCT r.pipeline_counter FROM stage_runs r \
           WHERE (cardinality($1::text[]) = 0 OR r.namespace = ANY($1)) AND r.pipeline = $2 \
           AND NOT (r.pipeline_counter = ANY($3::bigint[])) \
           AND r.start_time >= $4::text::timestamptz \
           AND NOT EXISTS ( \
             SELECT 1 FROM stage_runs o \
             WHERE (cardinality($1::text[]) = 0 OR o.namespace = ANY($1)) AND o.pipeline = $2 \
             AND o.pipeline_counter = r.pipeline_counter \
             AND o.start_time < $4::text::timestamptz)) "
    };
}

/// A run's Studio package state, as `sidecar::studio::package_state`
/// gives it.
macro_rules! package_state {
    () => {
        "(CASE WHEN phase = 'Succeeded' THEN 'COMPLETED' \
         WHEN phase = 'Failed' AND result = 'Cancelled' THEN 'CANCELLED' \
         WHEN phase = 'Failed' THEN 'BLOCKED' \
         WHEN phase = 'Canceling' THEN 'CANCELLED' \
         ELSE 'READY_FOR_LIVE' END)"
    };
}

/// The packages of site `$2` in namespaces `$1` (all when empty) but for
/// the uids `$3` (runs the caller has from the cluster); of environment
/// (stage) `$4`, ASCII case ignored, unless null; in one of the states `$5`
/// unless empty.
macro_rules! of_site {
    () => {
        concat!(
            "FROM stage_runs WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
             AND pipeline = $2 AND NOT (uid = ANY($3::text[])) \
             AND ($4::text IS NULL OR translate(stage, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', \
             'abcdefghijklmnopqrstuvwxyz') = translate($4, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', \
             'abcdefghijklmnopqrstuvwxyz')) \
             AND (cardinality($5::text[]) = 0 OR ",
            package_state!(),
            " = ANY($5::text[]))"
        )
    };
}

/// Studio's queue order, newest first: creation time, then pipeline and
/// stage counters, then name and uid byte-wise, exactly as the REST API
/// orders the cluster's packages (`sidecar::studio::queue_order`).
macro_rules! queue_order {
    () => {
        "created_at DESC NULLS LAST, pipeline_counter DESC, stage_counter DESC, \
         name COLLATE \"C\" ASC, uid COLLATE \"C\" ASC"
    };
}

impl Archive {
    /// A page of build task `pipeline`'s archived builds in `namespaces`
    /// (all when empty) but for the build numbers in `excluding`, those
    /// that started at `since` or later, newest first, `limit` from
    /// `offset`, with their total.
    pub async fn build_page(
        &self,
        namespaces: &[String],
        pipeline: &str,
        excluding: &[i64],
        since: k8s_openapi::jiff::Timestamp,
        offset: i64,
        limit: i64,
    ) -> Result<BuildPage> {
        self.migrate().await?;
        let excluding = &self.held_counters(namespaces, pipeline, excluding).await?;
        let (total, numbers): (i64, Vec<i64>) = sqlx::query_as(concat!(
            builds_since!(),
            "SELECT (SELECT COUNT(*) FROM builds), \
             ARRAY(SELECT pipeline_counter FROM builds ORDER BY pipeline_counter DESC \
                   LIMIT $5 OFFSET $6)"
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(excluding)
        .bind(since.to_string())
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_one(&self.pool)
        .timed(
            &self.metrics,
            "read a page of a build task's archived builds",
        )
        .await?;
        Ok(BuildPage { numbers, total })
    }

    /// The archived packages of site `pipeline` in `namespaces` (all when
    /// empty) but for the uids in `excluding`, of `environment` (ASCII
    /// case ignored) unless `None`, in one of `states` unless empty, in
    /// Studio's queue order, `limit` from `offset`, with their total.
    #[allow(clippy::too_many_arguments)]
    pub async fn site_packages(
        &self,
        namespaces: &[String],
        pipeline: &str,
        excluding: &[String],
        environment: Option<&str>,
        states: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Page> {
        self.migrate().await?;
        let excluding = &self.held(excluding).await?;
        let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*) ", of_site!()))
            .bind(namespaces)
            .bind(pipeline)
            .bind(excluding)
            .bind(environment)
            .bind(states)
            .fetch_one(&self.pool)
            .timed(&self.metrics, "count a site's archived packages")
            .await?;
        let objects: Vec<Value> = sqlx::query_scalar(concat!(
            "SELECT object ",
            of_site!(),
            " ORDER BY ",
            queue_order!(),
            " LIMIT $6 OFFSET $7"
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(excluding)
        .bind(environment)
        .bind(states)
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .timed(&self.metrics, "read a page of a site's archived packages")
        .await?;
        let runs = objects.into_iter().map(decoded).collect::<Result<_>>()?;
        Ok(Page { runs, total })
    }

    /// The archived runs of site `pipeline` among `uids` (package ids).
    pub async fn site_runs(&self, pipeline: &str, uids: &[String]) -> Result<Vec<StageRun>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.migrate().await?;
        let objects: Vec<Value> = sqlx::query_scalar(
            "SELECT object FROM stage_runs WHERE pipeline = $1 AND uid = ANY($2::text[])",
        )
        .bind(pipeline)
        .bind(uids)
        .fetch_all(&self.pool)
        .timed(&self.metrics, "read archived packages by id")
        .await?;
        objects.into_iter().map(decoded).collect()
    }
}
