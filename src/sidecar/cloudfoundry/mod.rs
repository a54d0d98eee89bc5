//! Cloud Foundry: the root documents, and v3 tasks to list, read and
//! cancel. A task is a StageRun; its guid is the StageRun's uid, its
//! sequence id the pipeline counter, and its app the pipeline.

pub mod list;
pub mod selector;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

use super::auth::Identity;
use super::http::{Call, json};
use super::render::ApiErrors;
use super::routes::CfRoute;
use super::service::Service;
use super::service::{CancelCall, Failure, Signing};
use crate::crd::{StagePhase, StageRun};

#[derive(Serialize)]
struct CfError<'a> {
    code: u32,
    title: &'a str,
    detail: &'a str,
}

#[derive(Serialize)]
struct CfErrors<'a> {
    errors: [CfError<'a>; 1],
}

pub fn error(status: StatusCode, code: u32, title: &str, detail: &str) -> Response {
    json(
        status,
        &CfErrors {
            errors: [CfError {
                code,
                title,
                detail,
            }],
        },
    )
}

pub fn not_authenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        10002,
        "CF-NotAuthenticated",
        "Authentication error",
    )
}

pub fn task_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        10010,
        "CF-ResourceNotFound",
        "Task not found",
    )
}

fn app_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        10010,
        "CF-ResourceNotFound",
        "App not found",
    )
}

fn bad_query(detail: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        10005,
        "CF-BadQueryParameter",
        detail,
    )
}

fn not_authorized() -> Response {
    error(
        StatusCode::FORBIDDEN,
        10003,
        "CF-NotAuthorized",
        "You are not authorized to perform the requested action",
    )
}

/// Cloud Foundry's error format: `{"errors": [{"code", "title", "detail"}]}`.
pub struct Errors;

impl ApiErrors for Errors {
    fn route_not_found(&self, _path: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            10000,
            "CF-NotFound",
            "Unknown request",
        )
    }
    fn method_not_allowed(&self, allow: &str) -> Response {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            10000,
            "CF-NotFound",
            &format!("Unknown request: use {allow}"),
        )
    }
    fn too_large(&self) -> Response {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: request body larger than 64 KiB",
        )
    }
    fn request_timeout(&self) -> Response {
        error(
            StatusCode::REQUEST_TIMEOUT,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: the request body was not received in time",
        )
    }
    fn unreadable(&self) -> Response {
        error(
            StatusCode::BAD_REQUEST,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: could not read the request body",
        )
    }
    fn unauthenticated(&self) -> Response {
        not_authenticated()
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "Cloud Foundry request failed");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            10015,
            "CF-ServiceUnavailable",
            "The Kubernetes API could not be reached; try again",
        )
    }
    fn archive_unavailable(&self, why: &str) -> Response {
        tracing::error!(
            error = why,
            "Cloud Foundry request failed: archive unavailable"
        );
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            10015,
            "CF-ServiceUnavailable",
            "The archive of finished tasks could not be reached; try again",
        )
    }
    fn forbidden(&self) -> Response {
        not_authorized()
    }
    /// Cloud Foundry answers a task the caller may not read as not found.
    fn hidden(&self) -> Response {
        task_not_found()
    }
}

/// Echoes the caller's `X-VCAP-Request-ID`, or gives the response one, as
/// the Cloud Controller does on every response.
pub fn stamp_request_id(request: &HeaderMap, response: &mut Response) {
    let id = request
        .get("x-vcap-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 255 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-vcap-request-id", v);
    }
}

/// A fresh request id in the uuid format the Cloud Controller uses.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = Timestamp::now().as_nanosecond();
    let h = crate::labels::digest(&[
        &now.to_string(),
        &n.to_string(),
        &std::process::id().to_string(),
    ]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Link {
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: Link,
    pub cancel: Link,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct TaskResult {
    pub failure_reason: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Metadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The v3 Task object.
#[derive(Serialize, Debug, PartialEq)]
pub struct Task {
    pub guid: String,
    pub sequence_id: i64,
    pub name: String,
    pub command: String,
    pub state: &'static str,
    pub memory_in_mb: i64,
    pub disk_in_mb: i64,
    pub droplet_guid: String,
    pub result: TaskResult,
    pub metadata: Metadata,
    pub created_at: String,
    pub updated_at: String,
    pub links: Links,
}

fn cf_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Megabytes in a Kubernetes quantity such as `512Mi`, `1Gi`, `1G`, `1048576`.
pub fn quantity_mb(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let bytes = n * match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((bytes / (1024.0 * 1024.0)).round() as i64)
}

fn state_of(run: &StageRun, canceling: bool) -> &'static str {
    state_in(run.status.as_ref().and_then(|s| s.phase), canceling)
}

/// The task state of a run in `phase`.
fn state_in(phase: Option<StagePhase>, canceling: bool) -> &'static str {
    match phase {
        Some(StagePhase::Succeeded) => "SUCCEEDED",
        Some(StagePhase::Failed) => "FAILED",
        _ if canceling => "CANCELING",
        Some(StagePhase::Canceling) => "CANCELING",
        Some(StagePhase::Running) => "RUNNING",
        Some(StagePhase::Pending) | None => "PENDING",
    }
}

const PHASES: [StagePhase; 5] = [
    StagePhase::Pending,
    StagePhase::Running,
    StagePhase::Canceling,
    StagePhase::Succeeded,
    StagePhase::Failed,
];

/// The phases, as the archive spells them (`Succeeded`), of the runs whose
/// tasks are in one of `states` (no cancel just requested, as in a list).
pub fn phases_in(states: &BTreeSet<&'static str>) -> Vec<String> {
    PHASES
        .into_iter()
        .filter(|p| states.contains(state_in(Some(*p), false)))
        .filter_map(|p| match serde_json::to_value(p) {
            Ok(Value::String(word)) => Some(word),
            _ => None,
        })
        .collect()
}

/// The first job's first container: what a task's command and resources
/// are read from.
fn first_container(run: &StageRun) -> Value {
    run.spec
        .jobs
        .first()
        .and_then(|j| j.template.pointer("/spec/containers/0"))
        .cloned()
        .unwrap_or_default()
}

/// The container's command and arguments, as one line.
fn command_line(container: &Value) -> String {
    let words = |key: &str| -> Vec<String> {
        container
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    [words("command"), words("args")].concat().join(" ")
}

/// The container's request of `resource`, in megabytes (0 when absent).
fn request_mb(container: &Value, resource: &str) -> i64 {
    container
        .pointer(&format!("/resources/requests/{resource}"))
        .and_then(|v| v.as_str())
        .and_then(quantity_mb)
        .unwrap_or(0)
}

/// When the run was created, and when it last changed (never before it
/// was created).
fn created_and_updated(run: &StageRun) -> (Timestamp, Timestamp) {
    let created = run
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let Some(status) = run.status.as_ref() else {
        return (created, created);
    };
    let updated = [
        status.start_time.as_ref().map(|t| t.0),
        status.completion_time.as_ref().map(|t| t.0),
        status.cancel.as_ref().map(|c| c.accepted_at.0),
    ]
    .into_iter()
    .flatten()
    .chain(status.conditions.iter().map(|c| c.last_transition_time.0))
    .max()
    .unwrap_or(created)
    .max(created);
    (created, updated)
}

/// A StageRun as a Task; `canceling` reports a cancel just requested.
pub fn task(run: &StageRun, base_url: &str, canceling: bool) -> Task {
    let guid = run.metadata.uid.clone().unwrap_or_default();
    let container = first_container(run);
    let (created, updated) = created_and_updated(run);
    let state = state_of(run, canceling);
    let failure_reason = (state == "FAILED").then(|| {
        run.status
            .as_ref()
            .and_then(|s| s.failure_reason.clone())
            .unwrap_or_else(|| "task failed".into())
    });
    let mut annotations = run.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    let self_href = format!("{base_url}/v3/tasks/{guid}");
    Task {
        sequence_id: run.spec.pipeline_counter,
        name: run.metadata.name.clone().unwrap_or_default(),
        command: command_line(&container),
        state,
        memory_in_mb: request_mb(&container, "memory"),
        disk_in_mb: request_mb(&container, "ephemeral-storage"),
        droplet_guid: String::new(),
        result: TaskResult { failure_reason },
        metadata: Metadata {
            labels: run.metadata.labels.clone().unwrap_or_default(),
            annotations,
        },
        created_at: cf_time(created),
        updated_at: cf_time(updated),
        links: Links {
            cancel: Link {
                href: format!("{self_href}/actions/cancel"),
                method: Some("POST"),
            },
            self_: Link {
                href: self_href,
                method: None,
            },
        },
        guid,
    }
}

/// The Cloud Controller release whose v3 task API the sidecar follows,
/// announced in the root document.
pub const API_VERSION: &str = "3.180.0";

/// `GET /`: what a Cloud Controller links to. The sidecar serves v3 tasks
/// and, at its own base URL, the token endpoint (`/oauth/token`) that the
/// `login` and `uaa` links lead clients to; everything else is null.
pub fn root(base_url: &str) -> Value {
    serde_json::json!({
        "links": {
            "self": {"href": base_url},
            "bits_service": null,
            "cloud_controller_v2": null,
            "cloud_controller_v3": {
                "href": format!("{base_url}/v3"),
                "meta": {"version": API_VERSION}
            },
            "network_policy_v0": null,
            "network_policy_v1": null,
            "login": {"href": base_url},
            "uaa": {"href": base_url},
            "credhub": null,
            "routing": null,
            "logging": null,
            "log_cache": null,
            "log_stream": null,
            "app_ssh": null
        }
    })
}

/// `GET /v3`: links to the v3 resources served.
pub fn v3_root(base_url: &str) -> Value {
    serde_json::json!({
        "links": {
            "self": {"href": format!("{base_url}/v3")},
            "tasks": {"href": format!("{base_url}/v3/tasks")}
        }
    })
}

/// Answers a Cloud Foundry call: the roots are public; for a task call the
/// caller is identified, the route served, and a refusal of the service
/// rendered as Cloud Foundry does (a task it may not read is not found).
pub async fn handle(state: &Service, route: &CfRoute, call: &Call<'_>) -> Response {
    let base = call.base_url(state.external_url.as_deref());
    let tasks = || async {
        let who = state.identify(call, Signing::Refused).await?;
        Ok::<_, Failure>(Tasks {
            state,
            call,
            who,
            base: base.clone(),
        })
    };
    let answer = async {
        match route {
            CfRoute::Root => Ok(json(StatusCode::OK, &root(&base))),
            CfRoute::V3Root => Ok(json(StatusCode::OK, &v3_root(&base))),
            CfRoute::Get { guid } => tasks().await?.get(guid).await,
            CfRoute::Cancel { guid } | CfRoute::CancelPut { guid } => {
                tasks().await?.cancel(guid).await
            }
            CfRoute::List => tasks().await?.list(None).await,
            CfRoute::AppTasks { app_guid } => tasks().await?.list(Some(app_guid)).await,
        }
    }
    .await;
    answer.unwrap_or_else(|f| Errors.refused(&f))
}

/// A task call being served: who asks, and the base URL of the links.
struct Tasks<'a, 'c> {
    state: &'a Service,
    call: &'a Call<'c>,
    who: Identity,
    base: String,
}

impl Tasks<'_, '_> {
    /// `GET /v3/tasks/{guid}`: the task, if it exists and the caller may
    /// read it (Cloud Foundry hides the rest).
    /// A task that has moved to the archive reads as it did in the cluster.
    async fn get(&self, guid: &str) -> Result<Response, Failure> {
        let run = self.state.run_by_uid(guid).await?.ok_or(Failure::Hidden)?;
        let ns = run.metadata.namespace.clone().unwrap_or_default();
        match self.state.auth.can_read(&self.who, &ns).await {
            Ok(true) => Ok(json(StatusCode::OK, &task(&run, &self.base, false))),
            Ok(false) => Err(Failure::Hidden),
            Err(why) => Err(Failure::Unavailable(why)),
        }
    }

    /// `GET /v3/tasks` and `GET /v3/apps/{app_guid}/tasks`: the tasks the
    /// caller may read (per namespace), in the cluster and in the archive,
    /// filtered and paged as the query says. An app is a pipeline; one the
    /// caller cannot see in either is not found. Without the archive (when
    /// one is configured) there is no list: 503, never part of one.
    async fn list(&self, app: Option<&str>) -> Result<Response, Failure> {
        let query = match list::ListQuery::parse(&self.call.query_pairs()) {
            Ok(q) => q,
            Err(detail) => return Ok(bad_query(&detail)),
        };
        let runs = match app {
            Some(pipeline) => self.state.cache.by_pipeline(pipeline),
            None => self.state.cache.all(),
        };
        let archived_in = self.archived_namespaces(app).await?;
        let mut asked: BTreeSet<String> = archived_in.iter().cloned().collect();
        asked.extend(runs.iter().filter_map(|r| r.metadata.namespace.clone()));
        let readable = self.readable(asked).await?;
        let is_readable = |ns: &Option<String>| ns.as_ref().is_some_and(|ns| readable.contains(ns));
        let runs: Vec<_> = runs
            .into_iter()
            .filter(|r| is_readable(&r.metadata.namespace))
            .collect();
        let archived_in: Vec<String> = archived_in
            .into_iter()
            .filter(|ns| readable.contains(ns))
            .collect();
        if app.is_some() && runs.is_empty() && archived_in.is_empty() {
            return Ok(app_not_found());
        }
        let cluster = query.selected(runs.iter().map(|r| task(r, &self.base, false)).collect());
        let archived =
            (self.archived_window(&query, app, archived_in, &runs, cluster.len())).await?;
        let href = format!("{}{}", self.base, self.call.path);
        Ok(json(
            StatusCode::OK,
            &query.merged_page(cluster, archived, &href),
        ))
    }

    /// The archive's part of a list page: the window of its runs (in the
    /// `readable` namespaces with archived runs, without the cluster's
    /// `runs`) that the page needs beside `in_cluster` selected tasks of the
    /// cluster, and how many it selects in all.
    async fn archived_window(
        &self,
        query: &list::ListQuery,
        app: Option<&str>,
        readable: Vec<String>,
        runs: &[Arc<StageRun>],
        in_cluster: usize,
    ) -> Result<list::ArchivedWindow, Failure> {
        let Some(archive) = self.state.archive.as_ref().filter(|_| !readable.is_empty()) else {
            return Ok(list::ArchivedWindow::default());
        };
        // The cluster's copy of a run that is in both is the one shown;
        // only a finished run is ever archived.
        let excluding = (runs.iter())
            .filter(|r| r.is_finished())
            .filter(|r| (r.metadata.namespace.as_ref()).is_some_and(|ns| readable.contains(ns)))
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        let filter = query.archive_filter(readable, app, excluding);
        let (start, count) = query.archive_window(in_cluster);
        let page = archive
            .tasks(
                &filter,
                query.archive_order(),
                i64::try_from(start).unwrap_or(i64::MAX),
                i64::try_from(count).unwrap_or(i64::MAX),
            )
            .await
            .map_err(|e| Failure::ArchiveUnavailable(e.to_string()))?;
        Ok(list::ArchivedWindow {
            tasks: (page.runs.iter())
                .map(|r| task(r, &self.base, false))
                .collect(),
            start,
            total: u64::try_from(page.total).unwrap_or(0),
        })
    }

    /// The served namespaces with archived runs (of the app's pipeline,
    /// when given); none without an archive.
    async fn archived_namespaces(&self, app: Option<&str>) -> Result<Vec<String>, Failure> {
        let Some(archive) = &self.state.archive else {
            return Ok(Vec::new());
        };
        let found = (archive.task_namespaces(app).await)
            .map_err(|e| Failure::ArchiveUnavailable(e.to_string()))?;
        Ok(found
            .into_iter()
            .filter(|ns| self.state.cache.serves_namespace(ns))
            .collect())
    }

    /// Those of `namespaces` where the caller may read runs (`list
    /// stageruns`).
    async fn readable(&self, namespaces: BTreeSet<String>) -> Result<BTreeSet<String>, Failure> {
        let mut readable = BTreeSet::new();
        for ns in namespaces {
            let may =
                (self.state.auth.can_read(&self.who, &ns).await).map_err(Failure::Unavailable)?;
            if may {
                readable.insert(ns);
            }
        }
        Ok(readable)
    }

    /// `POST /v3/tasks/{guid}/actions/cancel` and `PUT /v3/tasks/{guid}/cancel`.
    /// Whether the caller may read the task is the service's question
    /// (`hide_unreadable`), asked once with whether it may cancel it. A task
    /// in the archive has finished: 422, as for one finished in the cluster.
    async fn cancel(&self, guid: &str) -> Result<Response, Failure> {
        let run = self.state.run_by_uid(guid).await?.ok_or(Failure::Hidden)?;
        let outcome = self
            .state
            .cancel(CancelCall {
                api: crate::labels::via::CLOUD_FOUNDRY,
                who: &self.who,
                runs: vec![run.clone()],
                reason: format!("task {guid} cancelled through the Cloud Foundry API"),
                hide_unreadable: true,
            })
            .await?;
        if outcome.any_cancelled() {
            return Ok(json(StatusCode::ACCEPTED, &task(&run, &self.base, true)));
        }
        let current = state_of(&run, false);
        Ok(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            10008,
            "CF-UnprocessableEntity",
            &format!("Task state is {current} and therefore cannot be canceled"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_root_links_what_the_clients_read() {
        let r = root("https://api.example.local");
        let links = &r["links"];
        assert_eq!(links["self"]["href"], "https://api.example.local");
        assert_eq!(
            links["cloud_controller_v3"],
            json!({"href": "https://api.example.local/v3", "meta": {"version": API_VERSION}})
        );
        // The python client fetches tokens from `login`, else `uaa`, else `self`.
        assert_eq!(links["login"]["href"], "https://api.example.local");
        assert_eq!(links["uaa"]["href"], "https://api.example.local");
        // Null links are absent services; clients skip them.
        for absent in [
            "cloud_controller_v2",
            "network_policy_v0",
            "network_policy_v1",
            "credhub",
            "routing",
            "logging",
            "log_cache",
            "log_stream",
            "app_ssh",
        ] {
            assert!(links[absent].is_null(), "{absent}");
        }
        assert_eq!(
            v3_root("http://h:1"),
            json!({"links": {"self": {"href": "http://h:1/v3"}, "tasks": {"href": "http://h:1/v3/tasks"}}})
        );
    }

    /// The phases asked of the archive are exactly those whose runs' tasks
    /// are in the states asked for.
    #[test]
    fn phases_in_states_invert_the_task_state() {
        let all: BTreeSet<&str> = list::STATES.into_iter().collect();
        let subsets: Vec<BTreeSet<&'static str>> = (0..1u32 << all.len())
            .map(|bits| {
                (list::STATES.iter().enumerate())
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, s)| *s)
                    .collect()
            })
            .collect();
        for states in &subsets {
            let phases = phases_in(states);
            for phase in PHASES {
                let word = serde_json::to_value(phase).unwrap();
                assert_eq!(
                    phases.iter().any(|p| word == json!(p)),
                    states.contains(state_in(Some(phase), false)),
                    "{states:?} {phase:?}"
                );
            }
        }
        assert_eq!(phases_in(&["SUCCEEDED"].into()), ["Succeeded"]);
        assert!(phases_in(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn quantities_convert_to_megabytes() {
        assert_eq!(quantity_mb("512Mi"), Some(512));
        assert_eq!(quantity_mb("1Gi"), Some(1024));
        assert_eq!(quantity_mb("1048576"), Some(1));
        assert_eq!(quantity_mb("1G"), Some(954));
        assert_eq!(quantity_mb("lots"), None);
        assert_eq!(quantity_mb("5Zi"), None);
    }

    #[test]
    fn a_cancelled_stagerun_is_a_failed_task() {
        let run: StageRun = serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": "demo-1", "namespace": "d", "uid": "6a1b", "creationTimestamp": "2026-01-01T10:00:00Z",
                         "labels": {"team": "a"}},
            "spec": {"pipeline": "demo", "pipelineCounter": 7, "stage": "s",
                     "jobs": [{"name": "j", "template": {"spec": {"containers": [{"name": "c", "image": "i",
                         "command": ["rake"], "args": ["db:migrate"], "resources": {"requests": {"memory": "256Mi"}}}]}}}]},
            "status": {"phase": "Failed", "result": "Cancelled", "failureReason": "task was cancelled",
                       "startTime": "2026-01-01T10:00:01Z", "completionTime": "2026-01-01T10:00:09Z"}
        }))
        .unwrap();
        let t = task(&run, "https://api.example.local", false);
        assert_eq!(t.state, "FAILED");
        assert_eq!(t.sequence_id, 7);
        assert_eq!(t.command, "rake db:migrate");
        assert_eq!(t.memory_in_mb, 256);
        assert_eq!(
            t.result.failure_reason.as_deref(),
            Some("task was cancelled")
        );
        assert_eq!(t.created_at, "2026-01-01T10:00:00Z");
        assert_eq!(t.updated_at, "2026-01-01T10:00:09Z");
        assert_eq!(
            t.links.cancel.href,
            "https://api.example.local/v3/tasks/6a1b/actions/cancel"
        );
        assert_eq!(
            t.links.self_.href,
            "https://api.example.local/v3/tasks/6a1b"
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["links"]["cancel"]["method"], "POST");
        assert_eq!(v["metadata"]["labels"]["team"], "a");
        assert!(v["links"]["self"].get("method").is_none());
    }
}
