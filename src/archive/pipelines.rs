//! Reads of archived runs by pipeline run (GoCD's pipeline history and
//! instances, and its stage instances): a pipeline run is the StageRuns of
//! one pipeline counter, so its history pages counters, not rows.

use serde_json::Value;

use super::{Archive, IdWindow, Timed, decoded};
use crate::Result;
use crate::crd::StageRun;

/// The rows of pipeline `$2` in namespaces `$1` (all when empty) whose
/// counter is not one of `$3`: the counters the caller has from the
/// cluster, so that the two lists of counters are disjoint.
macro_rules! of_pipeline {
    () => {
        "FROM stage_runs WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
         AND pipeline = $2 AND NOT (pipeline_counter = ANY($3::bigint[]))"
    };
}

/// A page of a pipeline's archived counters, newest first, and how many
/// there are in all.
#[derive(Debug, Default)]
pub struct CounterPage {
    pub counters: Vec<i64>,
    pub total: i64,
}

/// Archived counters of a pipeline paged by counter (GoCD's cursor), and
/// the newest and oldest of all.
#[derive(Debug, Default)]
pub struct CounterWindow {
    pub counters: Vec<i64>,
    pub newest: Option<i64>,
    pub oldest: Option<i64>,
}

impl Archive {
    /// The namespaces with archived runs of a pipeline, walked as
    /// [`Archive::stage_namespaces`] walks them.
    pub async fn pipeline_namespaces(&self, pipeline: &str) -> Result<Vec<String>> {
        self.namespaces_with(Some(pipeline), None).await
    }

    /// The pipeline's archived counters in `namespaces` but for those in
    /// `excluding`, newest first, `limit` from `offset`, with their total.
    pub async fn pipeline_counters(
        &self,
        namespaces: &[String],
        pipeline: &str,
        excluding: &[i64],
        offset: i64,
        limit: i64,
    ) -> Result<CounterPage> {
        self.migrate().await?;
        let excluding = &self.held_counters(namespaces, pipeline, excluding).await?;
        let total: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(DISTINCT pipeline_counter) ",
            of_pipeline!()
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(excluding)
        .fetch_one(&self.pool)
        .timed(&self.metrics, "count a pipeline's archived runs")
        .await?;
        let counters: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT DISTINCT pipeline_counter ",
            of_pipeline!(),
            " ORDER BY pipeline_counter DESC LIMIT $4 OFFSET $5"
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(excluding)
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .timed(
            &self.metrics,
            "read a page of a pipeline's archived counters",
        )
        .await?;
        Ok(CounterPage { counters, total })
    }

    /// The pipeline's archived counters (as [`Self::pipeline_counters`]
    /// selects them) on `window`'s side of a counter, the `limit` nearest,
    /// newest first, and the newest and oldest of all.
    pub async fn pipeline_counter_window(
        &self,
        namespaces: &[String],
        pipeline: &str,
        excluding: &[i64],
        window: IdWindow,
        limit: i64,
    ) -> Result<CounterWindow> {
        self.migrate().await?;
        let excluding = &self.held_counters(namespaces, pipeline, excluding).await?;
        let (newest, oldest): (Option<i64>, Option<i64>) = sqlx::query_as(concat!(
            "SELECT MAX(pipeline_counter), MIN(pipeline_counter) ",
            of_pipeline!()
        ))
        .bind(namespaces)
        .bind(pipeline)
        .bind(excluding)
        .fetch_one(&self.pool)
        .timed(
            &self.metrics,
            "read the range of a pipeline's archived counters",
        )
        .await?;
        let (counter, sql) = match window {
            IdWindow::Below(c) => (
                c,
                concat!(
                    "SELECT DISTINCT pipeline_counter ",
                    of_pipeline!(),
                    " AND pipeline_counter < $4 ORDER BY pipeline_counter DESC LIMIT $5"
                ),
            ),
            IdWindow::Above(c) => (
                c,
                concat!(
                    "SELECT DISTINCT pipeline_counter ",
                    of_pipeline!(),
                    " AND pipeline_counter > $4 ORDER BY pipeline_counter ASC LIMIT $5"
                ),
            ),
        };
        let mut counters: Vec<i64> = sqlx::query_scalar(sql)
            .bind(namespaces)
            .bind(pipeline)
            .bind(excluding)
            .bind(counter)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .timed(
                &self.metrics,
                "read a window of a pipeline's archived counters",
            )
            .await?;
        counters.sort_unstable_by(|a, b| b.cmp(a));
        Ok(CounterWindow {
            counters,
            newest,
            oldest,
        })
    }

    /// The archived runs of the pipeline runs `counters` of `pipeline` in
    /// `namespaces` (all when empty), but for the uids in `excluding`.
    pub async fn pipeline_runs(
        &self,
        namespaces: &[String],
        pipeline: &str,
        counters: &[i64],
        excluding: &[String],
    ) -> Result<Vec<StageRun>> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        self.migrate().await?;
        let objects: Vec<Value> = sqlx::query_scalar(
            "SELECT object FROM stage_runs \
             WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
             AND pipeline = $2 AND pipeline_counter = ANY($3::bigint[]) \
             AND NOT (uid = ANY($4::text[]))",
        )
        .bind(namespaces)
        .bind(pipeline)
        .bind(counters)
        .bind(excluding)
        .fetch_all(&self.pool)
        .timed(&self.metrics, "read the archived runs of pipeline runs")
        .await?;
        objects.into_iter().map(decoded).collect()
    }

    /// The archived runs of one stage instance in `namespaces` (all when
    /// empty).
    pub async fn stage_instance(
        &self,
        namespaces: &[String],
        pipeline: &str,
        pipeline_counter: i64,
        stage: &str,
        stage_counter: i64,
    ) -> Result<Vec<StageRun>> {
        self.migrate().await?;
        let objects: Vec<Value> = sqlx::query_scalar(
            "SELECT object FROM stage_runs \
             WHERE (cardinality($1::text[]) = 0 OR namespace = ANY($1)) \
             AND pipeline = $2 AND pipeline_counter = $3 AND stage = $4 AND stage_counter = $5",
        )
        .bind(namespaces)
        .bind(pipeline)
        .bind(pipeline_counter)
        .bind(stage)
        .bind(stage_counter)
        .fetch_all(&self.pool)
        .timed(&self.metrics, "read the archived runs of a stage instance")
        .await?;
        objects.into_iter().map(decoded).collect()
    }
}
