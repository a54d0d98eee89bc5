//! The custom resources: `StageRun` (a stage whose jobs run as batch/v1 Jobs)
//! and `CancelRequest` (a request to cancel one or more StageRuns).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both resources.
pub const GROUP: &str = "cancel.dev";

/// Names of pipelines, stages and jobs, as GoCD allows them.
const NAME_PATTERN: &str = "^[a-zA-Z0-9_\\-][a-zA-Z0-9_\\-.]*$";

/// A stage of a pipeline run: a set of jobs, each run as a Kubernetes Job.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cancel.dev",
    version = "v1alpha1",
    kind = "StageRun",
    namespaced,
    status = "StageRunStatus",
    shortname = "sr",
    category = "cancel",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Counter", type_ = "integer", json_path = ".spec.pipelineCounter"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Result", type_ = "string", json_path = ".status.result"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec")
        .message("spec is immutable: create a new StageRun instead of changing this one")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.cleanup) || self.cleanup.all(c, !self.jobs.exists(j, j.name == c.name))")
    .message("a cleanup job cannot have the name of one of the stage's jobs"))]
pub struct StageRunSpec {
    /// Name of the pipeline this stage belongs to (GoCD pipeline name, CodeArts
    /// job_id, CrafterCMS site_id).
    #[schemars(length(min = 1, max = 255), regex(pattern = NAME_PATTERN))]
    pub pipeline: String,

    /// Run number of the pipeline (GoCD pipeline_counter, CodeArts build_no,
    /// Cloud Foundry sequence_id).
    #[schemars(range(min = 1))]
    pub pipeline_counter: i64,

    /// Name of the stage within the pipeline.
    #[schemars(length(min = 1, max = 255), regex(pattern = NAME_PATTERN))]
    pub stage: String,

    /// Run number of this stage within the pipeline run (GoCD stage counter).
    #[serde(default = "default_counter")]
    #[schemars(range(min = 1))]
    pub stage_counter: i64,

    /// Who or what triggered the stage ("changes" for a material change).
    #[serde(default = "default_approved_by")]
    #[schemars(length(min = 1, max = 255))]
    pub approved_by: String,

    /// How the stage is triggered. A `manual` stage waits in Pending, creating
    /// no Job, until it is approved with the annotation `cancel.dev/approved: "true"`.
    #[serde(default)]
    pub approval_type: ApprovalType,

    /// The jobs of the stage; they run in parallel, each as a batch/v1 Job.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(validation = Rule::new("self.all(j, self.filter(k, k.name == j.name).size() == 1)")
        .message("job names must be unique within a stage"))]
    pub jobs: Vec<JobTemplate>,

    /// Seconds a job's pods get to stop after SIGTERM when the stage is cancelled,
    /// before they are killed. Pods still present after this period and a margin
    /// are force-deleted.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 86400))]
    pub cancel_grace_period_seconds: i64,

    /// Maximum seconds the stage may run once started (at most a year);
    /// after it the stage is cancelled with reason DeadlineExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self <= 31536000")
        .message("activeDeadlineSeconds must be at most 31536000 (a year)"))]
    pub active_deadline_seconds: Option<i64>,

    /// Jobs that run when the stage ends, once its other jobs passed, failed
    /// or were cancelled and none of their pods is left (Tekton `finally`,
    /// GoCD `oncancel`, GitHub Actions `if: always()` / `cancelled()`). Each
    /// runs when its `when` holds, with a deadline of its own; the stage
    /// stays Running (or Canceling) until they have ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(j, self.filter(k, k.name == j.name).size() == 1)")
        .message("cleanup job names must be unique within a stage"))]
    pub cleanup: Vec<CleanupJob>,
}

impl StageRunSpec {
    /// Every job's name: the stage's jobs, then its cleanup jobs.
    pub fn job_names(&self) -> impl Iterator<Item = &str> {
        (self.jobs.iter().map(|j| j.name.as_str()))
            .chain(self.cleanup.iter().map(|c| c.job.name.as_str()))
    }

    /// The template of the job (or cleanup job) of this name.
    pub fn template(&self, name: &str) -> Option<&JobTemplate> {
        (self.jobs.iter())
            .chain(self.cleanup.iter().map(|c| &c.job))
            .find(|j| j.name == name)
    }

    /// The cleanup job of this name.
    pub fn cleanup_job(&self, name: &str) -> Option<&CleanupJob> {
        self.cleanup.iter().find(|c| c.job.name == name)
    }
}

/// A job that runs when the stage ends.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CleanupJob {
    #[serde(flatten)]
    pub job: JobTemplate,

    /// When it runs, judged once the stage's jobs have ended: `Always`
    /// (Tekton `finally`, GitHub `if: always()`), `Cancelled` (the stage was
    /// cancelled, stopped or timed out: GoCD `oncancel`, GitHub
    /// `if: cancelled()`), `Failed` (a job failed on its own: GitHub
    /// `if: failure()`), `Succeeded` (every job passed: GitHub `if: success()`).
    #[serde(default)]
    pub when: CleanupWhen,

    /// Seconds it may run (at most a day); the job controller ends it then
    /// (its Job carries the deadline), and so does the controller.
    #[serde(default = "default_cleanup_deadline")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self <= 86400")
        .message("a cleanup job's activeDeadlineSeconds must be at most 86400 (a day)"))]
    pub active_deadline_seconds: i64,
}

/// When a cleanup job runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CleanupWhen {
    /// Whatever the stage's outcome.
    #[default]
    Always,
    /// The stage was cancelled, stopped or timed out.
    Cancelled,
    /// A job of the stage failed on its own.
    Failed,
    /// Every job of the stage passed.
    Succeeded,
}

/// Seconds a cleanup job may run unless it says otherwise.
pub const DEFAULT_CLEANUP_DEADLINE: i64 = 600;

fn default_cleanup_deadline() -> i64 {
    DEFAULT_CLEANUP_DEADLINE
}

fn default_counter() -> i64 {
    1
}
fn default_approved_by() -> String {
    "changes".into()
}
fn default_grace() -> i64 {
    30
}

/// How a stage is triggered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalType {
    /// Runs as soon as it is created.
    #[default]
    Success,
    /// Waits for approval (annotation `cancel.dev/approved: "true"`).
    Manual,
}

/// One job of a stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// Name of the job, unique within the stage.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,

    /// Pod template of the job, as in a batch/v1 Job's `spec.template`.
    /// `restartPolicy` defaults to Never; `terminationGracePeriodSeconds` is set
    /// from the stage's cancelGracePeriodSeconds.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: serde_json::Value,

    /// Retries before the job is marked failed, as in a batch/v1 Job.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
}

/// A pod template, checked by the API server for the parts the controller
/// relies on; the rest is validated when the Job is created.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Pod template of the job, as in a batch/v1 Job's spec.template.",
        "required": ["spec"],
        "properties": {
            "metadata": {
                "type": "object",
                "description": "Labels and annotations for the job's pods.",
                "x-kubernetes-preserve-unknown-fields": true
            },
            "spec": {
                "type": "object",
                "description": "Pod spec (core/v1 PodSpec).",
                "required": ["containers"],
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "containers": {
                        "type": "array",
                        "minItems": 1,
                        "description": "Containers of the pod; at least one.",
                        "items": {
                            "type": "object",
                            "required": ["name", "image"],
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "image": {"type": "string", "minLength": 1}
                            }
                        }
                    },
                    "restartPolicy": {
                        "type": "string",
                        "enum": ["Never", "OnFailure"],
                        "description": "Never (default) or OnFailure."
                    }
                }
            }
        }
    })
}

/// `apiVersion` of the resources.
pub const API_VERSION: &str = "cancel.dev/v1alpha1";

/// Lifecycle phase of a StageRun.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StagePhase {
    /// Accepted; no job has been started (or the stage awaits approval).
    Pending,
    /// Its Jobs exist and run.
    Running,
    /// A cancel was accepted; its pods are being stopped.
    Canceling,
    /// Every job passed.
    Succeeded,
    /// A job failed, or the stage was cancelled or timed out.
    Failed,
}

impl StagePhase {
    pub fn is_finished(self) -> bool {
        matches!(self, StagePhase::Succeeded | StagePhase::Failed)
    }
}

impl StageRun {
    /// Succeeded or Failed: its result is final and nothing more is done.
    pub fn is_finished(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(StagePhase::is_finished)
    }
}

/// Reason of a cancel caused by `activeDeadlineSeconds`.
pub const REASON_DEADLINE: &str = "DeadlineExceeded";

impl CancelRecord {
    /// A cancel caused by the stage's deadline rather than a request.
    pub fn is_timeout(&self) -> bool {
        self.cause == CancelCause::Deadline
    }
}

/// What started a StageRun's cancel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CancelCause {
    /// A CancelRequest (named in `requestName`). Records written before
    /// this field existed read as `Request`.
    #[default]
    Request,
    /// The stage's `activeDeadlineSeconds` passed.
    Deadline,
}

impl CancelRequest {
    /// Completed or Rejected: only its TTL is left to run.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase),
            Some(RequestPhase::Completed | RequestPhase::Rejected)
        )
    }
}

/// Result of a stage or job, in GoCD's vocabulary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RunResult {
    #[default]
    Unknown,
    Passed,
    Failed,
    Cancelled,
}

/// State of a job, in GoCD's vocabulary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum JobState {
    /// Waiting for a pod to be scheduled (or the Job to be created).
    #[default]
    Scheduled,
    /// A pod is bound to a node.
    Assigned,
    /// The pod's containers are being prepared.
    Preparing,
    /// The pod runs.
    Building,
    /// The job is finishing or being stopped.
    Completing,
    /// Final.
    Completed,
}

/// Observed state of a StageRun, written only by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageRunStatus {
    /// Stable numeric id of this stage run (GoCD stage id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StagePhase>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,

    /// One entry per job of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub jobs: Vec<JobStatus>,

    /// Who cancelled the stage, why and when; set once a cancel is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelRecord>,

    /// Why the stage failed, e.g. `task was cancelled`, `deadline exceeded`,
    /// `job UnitTest failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Observed state of one job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: String,
    /// Stable numeric id of this job run (GoCD job id).
    pub id: i64,
    pub state: JobState,
    pub result: RunResult,
    /// When the job was scheduled (its Job created), or the stage accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Time>,
    /// Name of the batch/v1 Job running it, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Uid of that Job: its pods are known by it (they name it as their
    /// controller), also once the Job itself is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_uid: Option<String>,
    /// When the job reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// A cleanup job: it runs when the stage's other jobs have ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleanup: bool,
    /// A cleanup job whose `when` did not hold (or that a Terminate
    /// skipped): it never ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// The accepted cancel of a StageRun.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelRecord {
    /// What started the cancel.
    #[serde(default)]
    pub cause: CancelCause,
    /// The CancelRequest that cancelled it; empty for a timeout.
    #[serde(default)]
    pub request_name: String,
    pub requested_by: String,
    pub reason: String,
    /// When the cancel was requested (the CancelRequest's creation).
    pub requested_at: Time,
    /// When the controller accepted it and began stopping pods.
    pub accepted_at: Time,
    /// Seconds the pods get after SIGTERM.
    pub grace_period_seconds: i64,
    /// How the run is being stopped. A later request of a stronger mode
    /// (Stop, then Cancel, then Terminate) takes over the record.
    #[serde(default)]
    pub mode: CancelMode,
}

/// How a cancel stops a StageRun.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum CancelMode {
    /// Running jobs finish on their own with their results, nothing new
    /// starts; then the cleanup jobs run (Tekton `StoppedRunFinally`, `argo stop`).
    Stop,
    /// Graceful, then forced on a deadline; then the cleanup jobs run
    /// (Tekton `CancelledRunFinally`).
    #[default]
    Cancel,
    /// As Cancel, and cleanup is skipped; cleanup jobs already running are
    /// cancelled too (Tekton `Cancelled`, `argo terminate`). Also ends a run
    /// that is already stopping, canceling or cleaning up.
    Terminate,
}

/// A request to cancel StageRuns: one, every active instance of a stage, a
/// build, a list of uids, or all matching a label selector.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cancel.dev",
    version = "v1alpha1",
    kind = "CancelRequest",
    namespaced,
    status = "CancelRequestStatus",
    shortname = "cxr",
    category = "cancel",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Cancelled", type_ = "integer", json_path = ".status.cancelled"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "By", type_ = "string", json_path = ".spec.requestedBy"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec")
        .message("spec is immutable: create a new CancelRequest instead of changing this one")
)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequestSpec {
    /// What to cancel; exactly one kind of target.
    pub target: CancelTarget,

    /// Why (recorded on each cancelled StageRun).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub reason: String,

    /// Who asked; the REST sidecar sets the authenticated user.
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub requested_by: String,

    /// Overrides the StageRuns' cancelGracePeriodSeconds; 0 kills the pods at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: Option<i64>,

    /// How the StageRuns are stopped: `Cancel` (default), `Stop` or `Terminate`.
    #[serde(default)]
    pub mode: CancelMode,

    /// Seconds after completion before the controller deletes this request
    /// (at most a year).
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self <= 31536000")
        .message("ttlSecondsAfterFinished must be at most 31536000 (a year)"))]
    pub ttl_seconds_after_finished: i64,
}

/// Seconds a finished CancelRequest is kept before the controller deletes it.
pub const DEFAULT_TTL_SECONDS: i64 = 86400;

fn default_ttl() -> i64 {
    DEFAULT_TTL_SECONDS
}

/// The StageRuns a CancelRequest is about. Set exactly one field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.stageRun), has(self.stage), has(self.build), has(self.uids), has(self.selector)].filter(x, x).size() == 1"
).message("target must set exactly one of stageRun, stage, build, uids or selector"))]
pub struct CancelTarget {
    /// Name of one StageRun in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub stage_run: Option<String>,

    /// Every active run of a pipeline's stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageTarget>,

    /// Every active stage of one pipeline run (CodeArts job + build number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildTarget>,

    /// StageRuns by uid (Cloud Foundry task guid, CrafterCMS package id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub uids: Option<Vec<String>>,

    /// Every active StageRun whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The one kind of StageRuns a [`CancelTarget`] names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetKind<'a> {
    StageRun(&'a str),
    Stage(&'a StageTarget),
    Build(&'a BuildTarget),
    Uids(&'a [String]),
    Selector(&'a LabelSelector),
}

impl CancelTarget {
    /// Which kind of target is set (the first, should the schema's
    /// exactly-one rule be bypassed); `None` when none is.
    pub fn kind(&self) -> Option<TargetKind<'_>> {
        if let Some(name) = &self.stage_run {
            Some(TargetKind::StageRun(name))
        } else if let Some(stage) = &self.stage {
            Some(TargetKind::Stage(stage))
        } else if let Some(build) = &self.build {
            Some(TargetKind::Build(build))
        } else if let Some(uids) = &self.uids {
            Some(TargetKind::Uids(uids))
        } else {
            self.selector.as_ref().map(TargetKind::Selector)
        }
    }
}

/// A pipeline's stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageTarget {
    #[schemars(length(min = 1, max = 255))]
    pub pipeline: String,
    #[schemars(length(min = 1, max = 255))]
    pub stage: String,
}

/// One run of a pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildTarget {
    #[schemars(length(min = 1, max = 255))]
    pub pipeline: String,
    #[schemars(range(min = 1))]
    pub pipeline_counter: i64,
}

/// Lifecycle phase of a CancelRequest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RequestPhase {
    Pending,
    InProgress,
    Completed,
    Rejected,
}

/// What became of one target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetOutcome {
    /// Its pods are being stopped.
    Canceling,
    /// It ended cancelled.
    Cancelled,
    /// It had finished before the cancel reached it; it keeps its result.
    AlreadyFinished,
    /// It was deleted before the cancel completed.
    Deleted,
}

/// Observed state of a CancelRequest, written only by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,

    /// The StageRuns matched when the request was accepted; never re-resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["uid".into()]))]
    pub targets: Vec<CancelTargetStatus>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One matched StageRun and its outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelTargetStatus {
    pub name: String,
    pub uid: String,
    pub outcome: TargetOutcome,
}

/// The CRDs as one multi-document YAML stream, as checked in under `crds/`.
pub fn crds_yaml() -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for crd in [StageRun::crd(), CancelRequest::crd()] {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_record_says_what_started_it_and_old_records_read_as_requests() {
        let record = |cause: Option<&str>| {
            let mut v = serde_json::json!({
                "requestName": "",
                "requestedBy": "cancel-operator",
                "reason": REASON_DEADLINE,
                "requestedAt": "2026-01-01T00:00:00Z",
                "acceptedAt": "2026-01-01T00:00:01Z",
                "gracePeriodSeconds": 30,
            });
            if let Some(c) = cause {
                v["cause"] = c.into();
            }
            serde_json::from_value::<CancelRecord>(v).unwrap()
        };
        assert!(record(Some("Deadline")).is_timeout());
        assert!(!record(Some("Request")).is_timeout());
        // The reason alone never makes a timeout.
        assert!(!record(None).is_timeout());
        assert_eq!(record(None).cause, CancelCause::Request);
        assert!(serde_json::from_value::<CancelCause>("Timeout".into()).is_err());
    }
}
