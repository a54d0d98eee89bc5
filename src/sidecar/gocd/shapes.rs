//! StageRuns in GoCD's JSON shapes, field for field: the seed's stage
//! history, the legacy and current (v3) stage instance, the legacy and
//! current (v1) pipeline instance, and the paging of each. Pure functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::crd::{ApprovalType, JobState, RunResult, StagePhase, StageRun};

/// Page size of the legacy offset forms.
pub const PAGE_SIZE: usize = 10;

/// GoCD's fallback when a cancel has no recorded user.
const CANCELLED_BY_SYSTEM: &str = "GoCD";

fn millis(t: Option<&Time>, run: &StageRun) -> i64 {
    t.or(run.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0)
}

fn approval_type(run: &StageRun) -> &'static str {
    match run.spec.approval_type {
        ApprovalType::Success => "success",
        ApprovalType::Manual => "manual",
    }
}

fn result(run: &StageRun) -> RunResult {
    run.status
        .as_ref()
        .and_then(|s| s.result)
        .unwrap_or_default()
}

/// Who cancelled a cancelled stage: the CancelRequest's requester, or
/// GoCD's own name for a timeout.
fn cancelled_by(run: &StageRun) -> Option<String> {
    (result(run) == RunResult::Cancelled).then(|| {
        run.status
            .as_ref()
            .and_then(|s| s.cancel.as_ref())
            .map(|c| c.requested_by.clone())
            .filter(|by| !by.is_empty())
            .unwrap_or_else(|| CANCELLED_BY_SYSTEM.to_string())
    })
}

/// One job of a run as the controller reports it, or as scheduled when the
/// controller has not seen the run yet.
struct JobView {
    name: String,
    id: i64,
    state: JobState,
    result: RunResult,
    scheduled: i64,
    completed: Option<i64>,
}

fn jobs(run: &StageRun) -> Vec<JobView> {
    let status = run.status.as_ref();
    match status.map(|s| &s.jobs).filter(|j| !j.is_empty()) {
        Some(jobs) => jobs
            .iter()
            .map(|j| JobView {
                name: j.name.clone(),
                id: j.id,
                state: j.state,
                result: j.result,
                scheduled: millis(j.scheduled_at.as_ref(), run),
                completed: j.completion_time.as_ref().map(|t| t.0.as_millisecond()),
            })
            .collect(),
        None => run
            .spec
            .job_names()
            .map(|name| JobView {
                name: name.to_string(),
                id: 0,
                state: JobState::Scheduled,
                result: RunResult::Unknown,
                scheduled: millis(None, run),
                completed: None,
            })
            .collect(),
    }
}

fn stage_id(run: &StageRun) -> i64 {
    run.status.as_ref().and_then(|s| s.id).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The seed's stage history (also the stages of a legacy pipeline instance).

/// One stage instance, field for field as GoCD's history JSON.
#[derive(Serialize, Debug, PartialEq)]
pub struct StageInstance {
    pub name: String,
    pub approved_by: String,
    pub jobs: Vec<JobInstance>,
    pub can_run: bool,
    pub pipeline_counter: i64,
    pub pipeline_name: String,
    pub approval_type: String,
    pub result: RunResult,
    pub id: i64,
    pub counter: String,
    pub operate_permission: bool,
    pub scheduled: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JobInstance {
    pub name: String,
    pub result: RunResult,
    pub state: JobState,
    pub id: i64,
    pub scheduled_date: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Pagination {
    pub offset: usize,
    pub total: usize,
    pub page_size: usize,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct History {
    pub stages: Vec<StageInstance>,
    pub pagination: Pagination,
}

/// A StageRun as a GoCD stage instance of the history.
pub fn stage_instance(run: &StageRun, operate_permission: bool) -> StageInstance {
    StageInstance {
        name: run.spec.stage.clone(),
        approved_by: run.spec.approved_by.clone(),
        jobs: jobs(run)
            .into_iter()
            .map(|j| JobInstance {
                name: j.name,
                result: j.result,
                state: j.state,
                id: j.id,
                scheduled_date: j.scheduled,
            })
            .collect(),
        can_run: false,
        pipeline_counter: run.spec.pipeline_counter,
        pipeline_name: run.spec.pipeline.clone(),
        approval_type: approval_type(run).into(),
        result: result(run),
        id: stage_id(run),
        counter: run.spec.stage_counter.to_string(),
        operate_permission,
        scheduled: true,
    }
}

// ---------------------------------------------------------------------------
// Stage instance: legacy (`/instance/{pc}/{sc}`) and current (v3).

/// How a stage instance was approved and how it ended.
#[derive(Serialize, Debug, PartialEq)]
pub struct StageOutcome {
    pub approval_type: &'static str,
    pub approved_by: String,
    pub result: RunResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// A StageRun is never a re-run of another.
    pub rerun_of_counter: Option<i64>,
}

fn stage_outcome(run: &StageRun) -> StageOutcome {
    StageOutcome {
        approval_type: approval_type(run),
        approved_by: run.spec.approved_by.clone(),
        result: result(run),
        cancelled_by: cancelled_by(run),
        rerun_of_counter: None,
    }
}

/// Where a job came from, when GoCD re-ran it on an agent: a StageRun's jobs
/// run once and on no agent, so every field is empty.
#[derive(Serialize, Debug, PartialEq, Default)]
pub struct JobOrigin {
    pub rerun: bool,
    pub original_job_id: Option<i64>,
    pub agent_uuid: Option<String>,
    pub pipeline_name: Option<String>,
    pub pipeline_counter: Option<i64>,
    pub stage_name: Option<String>,
    pub stage_counter: Option<String>,
}

/// A stage's material and artifact settings.
#[derive(Serialize, Debug, PartialEq)]
pub struct StageSettings {
    pub fetch_materials: bool,
    pub clean_working_directory: bool,
    pub artifacts_deleted: bool,
}

impl StageSettings {
    /// What a StageRun's stage does: its Jobs bring their own materials, in
    /// a fresh pod, and no artifact is deleted.
    pub const AS_RUN: StageSettings = StageSettings {
        fetch_materials: true,
        clean_working_directory: false,
        artifacts_deleted: false,
    };
}

#[derive(Serialize, Debug, PartialEq)]
pub struct LegacyJob {
    pub name: String,
    pub id: i64,
    pub result: RunResult,
    pub state: JobState,
    pub scheduled_date: i64,
    #[serde(flatten)]
    pub origin: JobOrigin,
}

/// The legacy stage instance.
#[derive(Serialize, Debug, PartialEq)]
pub struct LegacyStage {
    pub name: String,
    pub id: i64,
    pub jobs: Vec<LegacyJob>,
    pub pipeline_name: String,
    pub pipeline_counter: i64,
    pub counter: String,
    #[serde(flatten)]
    pub outcome: StageOutcome,
    #[serde(flatten)]
    pub settings: StageSettings,
}

pub fn legacy_stage(run: &StageRun) -> LegacyStage {
    LegacyStage {
        name: run.spec.stage.clone(),
        id: stage_id(run),
        jobs: jobs(run)
            .into_iter()
            .map(|j| LegacyJob {
                name: j.name,
                id: j.id,
                result: j.result,
                state: j.state,
                scheduled_date: j.scheduled,
                origin: JobOrigin::default(),
            })
            .collect(),
        pipeline_name: run.spec.pipeline.clone(),
        pipeline_counter: run.spec.pipeline_counter,
        counter: run.spec.stage_counter.to_string(),
        outcome: stage_outcome(run),
        settings: StageSettings::AS_RUN,
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JobTransition {
    pub state: JobState,
    pub state_change_time: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V3Job {
    pub name: String,
    pub state: JobState,
    pub result: RunResult,
    pub scheduled_date: i64,
    #[serde(flatten)]
    pub origin: JobOrigin,
    pub job_state_transitions: Vec<JobTransition>,
}

/// The current stage instance (`application/vnd.go.cd.v3+json`).
#[derive(Serialize, Debug, PartialEq)]
pub struct V3Stage {
    pub name: String,
    pub counter: i64,
    #[serde(flatten)]
    pub outcome: StageOutcome,
    pub scheduled_at: i64,
    pub last_transitioned_time: i64,
    #[serde(flatten)]
    pub settings: StageSettings,
    pub pipeline_name: String,
    pub pipeline_counter: i64,
    pub jobs: Vec<V3Job>,
}

/// When the run last changed state.
fn last_transition(run: &StageRun) -> i64 {
    let status = run.status.as_ref();
    [
        status.and_then(|s| s.completion_time.as_ref()),
        status
            .and_then(|s| s.cancel.as_ref())
            .map(|c| &c.accepted_at),
        status.and_then(|s| s.start_time.as_ref()),
    ]
    .into_iter()
    .flatten()
    .map(|t| t.0.as_millisecond())
    .max()
    .unwrap_or_else(|| millis(None, run))
}

pub fn v3_stage(run: &StageRun) -> V3Stage {
    V3Stage {
        name: run.spec.stage.clone(),
        counter: run.spec.stage_counter,
        outcome: stage_outcome(run),
        scheduled_at: millis(None, run),
        last_transitioned_time: last_transition(run),
        settings: StageSettings::AS_RUN,
        pipeline_name: run.spec.pipeline.clone(),
        pipeline_counter: run.spec.pipeline_counter,
        jobs: jobs(run)
            .into_iter()
            .map(|j| {
                let mut transitions = vec![JobTransition {
                    state: JobState::Scheduled,
                    state_change_time: j.scheduled,
                }];
                if let (JobState::Completed, Some(at)) = (j.state, j.completed) {
                    transitions.push(JobTransition {
                        state: JobState::Completed,
                        state_change_time: at,
                    });
                }
                V3Job {
                    name: j.name,
                    state: j.state,
                    result: j.result,
                    scheduled_date: j.scheduled,
                    origin: JobOrigin::default(),
                    job_state_transitions: transitions,
                }
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Cursor-paged stage history (v3).

#[derive(Serialize, Debug, PartialEq)]
pub struct HistoryJob {
    pub name: String,
    pub state: JobState,
    pub result: RunResult,
    pub scheduled_date: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V3HistoryStage {
    pub name: String,
    pub counter: i64,
    #[serde(flatten)]
    pub outcome: StageOutcome,
    pub pipeline_name: String,
    pub pipeline_counter: i64,
    pub jobs: Vec<HistoryJob>,
}

pub fn v3_history_stage(run: &StageRun) -> V3HistoryStage {
    V3HistoryStage {
        name: run.spec.stage.clone(),
        counter: run.spec.stage_counter,
        outcome: stage_outcome(run),
        pipeline_name: run.spec.pipeline.clone(),
        pipeline_counter: run.spec.pipeline_counter,
        jobs: jobs(run)
            .into_iter()
            .map(|j| HistoryJob {
                name: j.name,
                state: j.state,
                result: j.result,
                scheduled_date: j.scheduled,
            })
            .collect(),
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Href {
    pub href: String,
}

/// GoCD's `_links` of a cursor page; absent when there is nowhere to go.
#[derive(Serialize, Debug, PartialEq, Default)]
pub struct PageLinks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Href>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Href>,
}

/// Where a cursor page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    Latest,
    /// Entries older than this id.
    After(i64),
    /// Entries newer than this id.
    Before(i64),
}

/// A page of `ids` (distinct, newest first): the ids on the page, and the
/// ids the previous (newer) and next (older) links start from, as GoCD
/// computes them: a link exists unless the page holds the newest (oldest)
/// entry.
pub fn cursor_page(
    ids: &[i64],
    cursor: Cursor,
    size: usize,
) -> (Vec<i64>, Option<i64>, Option<i64>) {
    let page: Vec<i64> = match cursor {
        Cursor::Latest => ids.iter().copied().take(size).collect(),
        Cursor::After(after) => ids
            .iter()
            .copied()
            .filter(|id| *id < after)
            .take(size)
            .collect(),
        Cursor::Before(before) => {
            let mut newer: Vec<i64> = ids
                .iter()
                .rev()
                .copied()
                .filter(|id| *id > before)
                .take(size)
                .collect();
            newer.reverse();
            newer
        }
    };
    let (Some(first), Some(last)) = (page.first().copied(), page.last().copied()) else {
        return (page, None, None);
    };
    let previous = (ids.first() != Some(&first)).then_some(first);
    let next = (ids.last() != Some(&last)).then_some(last);
    (page, previous, next)
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V3History {
    #[serde(rename = "_links", skip_serializing_if = "Option::is_none")]
    pub links: Option<PageLinks>,
    pub stages: Vec<V3HistoryStage>,
}

/// Reads a cursor query: `after` and `before` (up to 18 decimal digits, 0
/// or blank meaning unset) and `page_size` (10 to 100 in decimal digits,
/// default 10). Digits only, so that what the OpenAPI document says is
/// exactly what is accepted.
pub fn parse_cursor(
    after: Option<&str>,
    before: Option<&str>,
    page_size: Option<&str>,
) -> Result<(Cursor, usize), String> {
    let digits = |v: &str| -> Option<i64> {
        (!v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    };
    let read = |key: &str, v: Option<&str>| -> Result<i64, String> {
        match v.filter(|v| !v.is_empty()) {
            None => Ok(0),
            Some(v) => digits(v).ok_or(format!(
                "The query parameter '{key}', if specified, must be a positive integer."
            )),
        }
    };
    let after = read("after", after)?;
    let before = read("before", before)?;
    let size = match page_size {
        None => 10,
        Some(v) => digits(v)
            .filter(|n| (10..=100).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                "The query parameter `page_size`, if specified must be a number between 10 and 100."
                    .to_string()
            })?,
    };
    let cursor = match (after, before) {
        (0, 0) => Cursor::Latest,
        (a, _) if a > 0 => Cursor::After(a),
        (_, b) => Cursor::Before(b),
    };
    Ok((cursor, size))
}

// ---------------------------------------------------------------------------
// Pipelines: a pipeline run is the StageRuns with one pipeline counter.

#[derive(Serialize, Debug, PartialEq)]
pub struct BuildCause {
    pub trigger_message: String,
    pub trigger_forced: bool,
    pub approver: String,
    pub material_revisions: Vec<serde_json::Value>,
}

fn build_cause(first: &StageRun) -> BuildCause {
    let by = &first.spec.approved_by;
    if by == "changes" {
        BuildCause {
            trigger_message: "modified by changes".into(),
            trigger_forced: false,
            approver: String::new(),
            material_revisions: vec![],
        }
    } else {
        BuildCause {
            trigger_message: format!("Forced by {by}"),
            trigger_forced: true,
            approver: by.clone(),
            material_revisions: vec![],
        }
    }
}

/// The legacy pipeline instance (pipeline history and `/instance/{counter}`).
#[derive(Serialize, Debug, PartialEq)]
pub struct LegacyPipeline {
    pub build_cause: BuildCause,
    pub name: String,
    pub natural_order: f64,
    pub comment: Option<String>,
    pub stages: Vec<StageInstance>,
    pub counter: i64,
    pub id: i64,
    pub preparing_to_schedule: bool,
    pub label: String,
    pub can_run: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct LegacyPipelineHistory {
    pub pipelines: Vec<LegacyPipeline>,
    pub pagination: Pagination,
}

/// The runs of each pipeline counter, newest counter first; stages in
/// the order they were created.
pub fn pipeline_runs(runs: &[Arc<StageRun>]) -> Vec<(i64, Vec<Arc<StageRun>>)> {
    let mut by_counter: BTreeMap<i64, Vec<Arc<StageRun>>> = BTreeMap::new();
    for r in runs {
        by_counter
            .entry(r.spec.pipeline_counter)
            .or_default()
            .push(r.clone());
    }
    by_counter
        .into_iter()
        .rev()
        .map(|(counter, mut stages)| {
            stages.sort_by(|a, b| {
                (
                    &a.metadata.creation_timestamp,
                    stage_id(a),
                    &a.metadata.name,
                )
                    .cmp(&(
                        &b.metadata.creation_timestamp,
                        stage_id(b),
                        &b.metadata.name,
                    ))
            });
            (counter, stages)
        })
        .collect()
}

/// One pipeline run in the legacy shape; `operate(run)` is the caller's
/// operate permission on that stage.
pub fn legacy_pipeline(
    counter: i64,
    stages: &[Arc<StageRun>],
    operate: &dyn Fn(&StageRun) -> bool,
) -> Option<LegacyPipeline> {
    let first = stages.first()?;
    Some(LegacyPipeline {
        build_cause: build_cause(first),
        name: first.spec.pipeline.clone(),
        natural_order: counter as f64,
        comment: None,
        stages: stages
            .iter()
            .map(|s| stage_instance(s, operate(s)))
            .collect(),
        counter,
        id: counter,
        preparing_to_schedule: false,
        label: counter.to_string(),
        can_run: false,
    })
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V1PipelineJob {
    pub name: String,
    pub scheduled_date: i64,
    pub state: JobState,
    pub result: RunResult,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V1PipelineStage {
    pub result: RunResult,
    pub status: &'static str,
    pub rerun_of_counter: Option<i64>,
    pub name: String,
    pub counter: String,
    pub scheduled: bool,
    pub approval_type: &'static str,
    pub approved_by: String,
    pub operate_permission: bool,
    pub can_run: bool,
    pub jobs: Vec<V1PipelineJob>,
}

/// The current pipeline instance (`application/vnd.go.cd.v1+json`).
#[derive(Serialize, Debug, PartialEq)]
pub struct V1Pipeline {
    pub name: String,
    pub counter: i64,
    pub label: String,
    pub natural_order: f64,
    pub can_run: bool,
    pub preparing_to_schedule: bool,
    pub comment: Option<String>,
    pub scheduled_date: i64,
    pub build_cause: BuildCause,
    pub stages: Vec<V1PipelineStage>,
}

/// GoCD's stage status: Building while it runs.
fn stage_status(run: &StageRun) -> &'static str {
    match run.status.as_ref().and_then(|s| s.phase) {
        Some(StagePhase::Succeeded) => "Passed",
        Some(StagePhase::Failed) if result(run) == RunResult::Cancelled => "Cancelled",
        Some(StagePhase::Failed) => "Failed",
        _ => "Building",
    }
}

pub fn v1_pipeline(
    counter: i64,
    stages: &[Arc<StageRun>],
    operate: &dyn Fn(&StageRun) -> bool,
) -> Option<V1Pipeline> {
    let first = stages.first()?;
    Some(V1Pipeline {
        name: first.spec.pipeline.clone(),
        counter,
        label: counter.to_string(),
        natural_order: counter as f64,
        can_run: false,
        preparing_to_schedule: false,
        comment: None,
        scheduled_date: millis(None, first),
        build_cause: build_cause(first),
        stages: stages
            .iter()
            .map(|s| V1PipelineStage {
                result: result(s),
                status: stage_status(s),
                rerun_of_counter: None,
                name: s.spec.stage.clone(),
                counter: s.spec.stage_counter.to_string(),
                scheduled: true,
                approval_type: approval_type(s),
                approved_by: s.spec.approved_by.clone(),
                operate_permission: operate(s),
                can_run: false,
                jobs: jobs(s)
                    .into_iter()
                    .map(|j| V1PipelineJob {
                        name: j.name,
                        scheduled_date: j.scheduled,
                        state: j.state,
                        result: j.result,
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[derive(Serialize, Debug, PartialEq)]
pub struct V1PipelineHistory {
    #[serde(rename = "_links", skip_serializing_if = "Option::is_none")]
    pub links: Option<PageLinks>,
    pub pipelines: Vec<V1Pipeline>,
}

/// Parses a pipeline or stage counter of a path: decimal digits only, so
/// that `+2` or ` 2` name no instance.
pub fn parse_counter(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Parses a history offset: a non-negative decimal integer.
pub fn parse_offset(raw: Option<&str>) -> Option<usize> {
    match raw {
        None => Some(0),
        Some(s) if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: serde_json::Value) -> StageRun {
        serde_json::from_value(v).unwrap()
    }

    fn cancelled_run() -> StageRun {
        run(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": "foo-2-uat", "namespace": "demo", "creationTimestamp": "2014-09-23T07:21:16Z"},
            "spec": {"pipeline": "foo", "pipelineCounter": 2, "stage": "UATTest",
                     "jobs": [{"name": "UAT", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}]},
            "status": {"id": 4, "phase": "Failed", "result": "Cancelled",
                       "startTime": "2014-09-23T07:21:17Z", "completionTime": "2014-09-23T07:21:20Z",
                       "cancel": {"requestName": "r", "requestedBy": "jez", "reason": "x",
                                  "requestedAt": "2014-09-23T07:21:18Z", "acceptedAt": "2014-09-23T07:21:18Z",
                                  "gracePeriodSeconds": 30},
                       "jobs": [{"name": "UAT", "id": 5, "state": "Completed", "result": "Cancelled",
                                 "scheduledAt": "2014-09-23T07:21:16Z", "completionTime": "2014-09-23T07:21:20Z"}]}
        }))
    }

    #[test]
    fn offsets_are_non_negative_integers() {
        assert_eq!(parse_offset(None), Some(0));
        assert_eq!(parse_offset(Some("0")), Some(0));
        assert_eq!(parse_offset(Some("20")), Some(20));
        for bad in ["", "-1", "abc", "1.5", "+1", "99999999999999999999"] {
            assert_eq!(parse_offset(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn counters_are_decimal_digits() {
        assert_eq!(parse_counter("2"), Some(2));
        assert_eq!(parse_counter("02"), Some(2));
        for bad in ["", "+2", "-2", " 2", "2 ", "x", "99999999999999999999"] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_stagerun_renders_as_gocd_documents_it() {
        let run = run(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": "foo-2-dev", "namespace": "demo", "creationTimestamp": "2014-09-23T07:21:16Z"},
            "spec": {"pipeline": "foo", "pipelineCounter": 2, "stage": "DEV", "approvedBy": "admin",
                     "jobs": [{"name": "UnitTest", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}]},
            "status": {"id": 3, "phase": "Failed", "result": "Failed",
                       "jobs": [{"name": "UnitTest", "id": 3, "state": "Completed", "result": "Failed",
                                 "scheduledAt": "2014-09-23T07:21:16.262Z"}]}
        }));
        let got = serde_json::to_value(stage_instance(&run, false)).unwrap();
        let want = json!({
            "name": "DEV", "approved_by": "admin",
            "jobs": [{"name": "UnitTest", "result": "Failed", "state": "Completed", "id": 3, "scheduled_date": 1411456876262_i64}],
            "can_run": false, "pipeline_counter": 2, "pipeline_name": "foo", "approval_type": "success",
            "result": "Failed", "id": 3, "counter": "1", "operate_permission": false, "scheduled": true
        });
        assert_eq!(got, want);
    }

    #[test]
    fn the_current_stage_instance_names_who_cancelled() {
        let got = serde_json::to_value(v3_stage(&cancelled_run())).unwrap();
        let want = json!({
            "name": "UATTest", "counter": 1, "approval_type": "success", "approved_by": "changes",
            "scheduled_at": 1411456876000_i64, "last_transitioned_time": 1411456880000_i64,
            "result": "Cancelled", "cancelled_by": "jez", "rerun_of_counter": null,
            "fetch_materials": true, "clean_working_directory": false, "artifacts_deleted": false,
            "pipeline_name": "foo", "pipeline_counter": 2,
            "jobs": [{"name": "UAT", "state": "Completed", "result": "Cancelled", "scheduled_date": 1411456876000_i64,
                      "rerun": false, "original_job_id": null, "agent_uuid": null, "pipeline_name": null,
                      "pipeline_counter": null, "stage_name": null, "stage_counter": null,
                      "job_state_transitions": [
                          {"state": "Scheduled", "state_change_time": 1411456876000_i64},
                          {"state": "Completed", "state_change_time": 1411456880000_i64}]}]
        });
        assert_eq!(got, want);
        let legacy = serde_json::to_value(legacy_stage(&cancelled_run())).unwrap();
        assert_eq!(legacy["cancelled_by"], "jez");
        assert_eq!(legacy["counter"], "1");
        assert_eq!(legacy["id"], 4);
        let history = serde_json::to_value(v3_history_stage(&cancelled_run())).unwrap();
        assert_eq!(history["cancelled_by"], "jez");
        assert!(history.get("id").is_none());
    }

    #[test]
    fn a_running_stage_has_no_cancelled_by() {
        let mut r = cancelled_run();
        let st = r.status.as_mut().unwrap();
        st.result = Some(RunResult::Unknown);
        st.phase = Some(StagePhase::Running);
        st.cancel = None;
        let v = serde_json::to_value(v3_stage(&r)).unwrap();
        assert!(v.get("cancelled_by").is_none());
        assert_eq!(v["result"], "Unknown");
        // A timeout has no requester: GoCD names itself.
        let mut t = cancelled_run();
        t.status.as_mut().unwrap().cancel = None;
        assert_eq!(v3_stage(&t).outcome.cancelled_by.as_deref(), Some("GoCD"));
    }

    #[test]
    fn cursor_pages_follow_gocd() {
        let ids: Vec<i64> = (1..=25).rev().collect();
        let (page, prev, next) = cursor_page(&ids, Cursor::Latest, 10);
        assert_eq!(page, (16..=25).rev().collect::<Vec<_>>());
        assert_eq!((prev, next), (None, Some(16)));
        let (page, prev, next) = cursor_page(&ids, Cursor::After(16), 10);
        assert_eq!(page, (6..=15).rev().collect::<Vec<_>>());
        assert_eq!((prev, next), (Some(15), Some(6)));
        let (page, prev, next) = cursor_page(&ids, Cursor::After(6), 10);
        assert_eq!(page, (1..=5).rev().collect::<Vec<_>>());
        assert_eq!((prev, next), (Some(5), None));
        let (page, prev, next) = cursor_page(&ids, Cursor::Before(5), 10);
        assert_eq!(page, (6..=15).rev().collect::<Vec<_>>());
        assert_eq!((prev, next), (Some(15), Some(6)));
        let (page, prev, next) = cursor_page(&ids, Cursor::After(1), 10);
        assert!(page.is_empty());
        assert_eq!((prev, next), (None, None));
    }

    #[test]
    fn cursor_queries_are_validated() {
        assert_eq!(parse_cursor(None, None, None), Ok((Cursor::Latest, 10)));
        assert_eq!(
            parse_cursor(Some("7"), None, Some("20")),
            Ok((Cursor::After(7), 20))
        );
        assert_eq!(
            parse_cursor(Some(""), Some("3"), None),
            Ok((Cursor::Before(3), 10))
        );
        for (a, b, p) in [
            (Some("x"), None, None),
            (Some("-1"), None, None),
            (None, Some("1.5"), None),
            (None, None, Some("9")),
            (None, None, Some("101")),
            (None, None, Some("ten")),
            (None, None, Some("+20")),
            (None, None, Some(" 20")),
            (Some(" 7"), None, None),
            (None, Some("+3"), None),
            (Some("9999999999999999999"), None, None),
        ] {
            assert!(parse_cursor(a, b, p).is_err(), "{a:?} {b:?} {p:?}");
        }
    }

    #[test]
    fn pipeline_runs_group_stages_by_counter() {
        let mut a = cancelled_run();
        a.spec.pipeline_counter = 1;
        let b = cancelled_run();
        let runs = vec![Arc::new(a), Arc::new(b)];
        let groups = pipeline_runs(&runs);
        assert_eq!(
            groups
                .iter()
                .map(|(c, s)| (*c, s.len()))
                .collect::<Vec<_>>(),
            vec![(2, 1), (1, 1)]
        );
        let p = legacy_pipeline(2, &groups[0].1, &|_| true).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["counter"], 2);
        assert_eq!(v["stages"][0]["name"], "UATTest");
        assert_eq!(v["stages"][0]["counter"], "1");
        assert_eq!(v["stages"][0]["operate_permission"], true);
        let c = serde_json::to_value(v1_pipeline(2, &groups[0].1, &|_| false).unwrap()).unwrap();
        assert_eq!(c["stages"][0]["status"], "Cancelled");
        assert_eq!(c["label"], "2");
        assert_eq!(c["build_cause"]["trigger_forced"], false);
    }
}
