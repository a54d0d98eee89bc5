//! Which endpoint a request is for: a pure function of method and path, so
//! that 404 and 405 are decided in one place, in the format of the API the
//! path belongs to.

use percent_encoding::percent_decode_str;
use warp::http::Method;

/// The API family a path belongs to; decides the error format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    GoCd,
    CodeArts,
    Crafter,
    /// CrafterCMS Studio's current API, under `/studio/api/2/`.
    StudioV2,
    CloudFoundry,
    /// The OAuth token endpoint Cloud Foundry clients find through the root
    /// document's `login` and `uaa` links.
    Uaa,
    Operations,
}

/// A recognised endpoint with its path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    GoCd(GoCdRoute),
    CodeArts(CodeArtsRoute),
    Crafter(CrafterRoute),
    CloudFoundry(CfRoute),
    Uaa(UaaRoute),
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

/// GoCD: the seeds' legacy routes and the current (versioned) ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoCdRoute {
    /// `POST /go/api/stages/{pipeline}/{stage}/cancel` (seed).
    Cancel { pipeline: String, stage: String },
    /// `POST /go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}/cancel`.
    CancelInstance(StageInstance),
    /// `GET /go/api/stages/{pipeline}/{stage}/history[/{offset}]`: the seed's
    /// offset form, or the cursor form when a versioned Accept asks for it.
    History {
        pipeline: String,
        stage: String,
        offset: Option<String>,
    },
    /// `GET /go/api/stages/{pipeline}/{stage}/instance/{pipeline_counter}/{stage_counter}` (legacy).
    StageInstanceLegacy(StageInstance),
    /// `GET /go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}` (current).
    StageInstance(StageInstance),
    /// `GET /go/api/pipelines/{pipeline}/history[/{offset}]`.
    PipelineHistory {
        pipeline: String,
        offset: Option<String>,
    },
    /// `GET /go/api/pipelines/{pipeline}/instance/{counter}` (legacy).
    PipelineInstanceLegacy { pipeline: String, counter: String },
    /// `GET /go/api/pipelines/{pipeline}/{counter}` (current).
    PipelineInstance { pipeline: String, counter: String },
    /// `GET /go/api/version`.
    Version,
    /// `GET /go/about` (an HTML page).
    About,
}

/// One run of a GoCD stage, as its path names it (counters unparsed: a
/// handler answers a bad one in GoCD's words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInstance {
    pub pipeline: String,
    pub pipeline_counter: String,
    pub stage: String,
    pub stage_counter: String,
}

/// A stage instance from its path segments, in the path's order of names.
pub fn instance(
    pipeline: &str,
    pipeline_counter: &str,
    stage: &str,
    stage_counter: &str,
) -> StageInstance {
    StageInstance {
        pipeline: pipeline.to_string(),
        pipeline_counter: pipeline_counter.to_string(),
        stage: stage.to_string(),
        stage_counter: stage_counter.to_string(),
    }
}

/// Huawei CodeArts Build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeArtsRoute {
    /// `POST /v3/jobs/stop` (seed).
    Stop,
    /// `POST /v3/jobs/{job_id}/{build_no}/stop`.
    StopPath { job_id: String, build_no: String },
    /// `GET /v3/jobs/{job_id}/status`: is a build of the task running?
    Status { job_id: String },
    /// `GET /v3/jobs/{job_id}/history?offset&limit&interval`.
    History { job_id: String },
    /// `GET /v3/jobs/{job_id}/{build_number}/history-details`.
    HistoryDetails {
        job_id: String,
        build_number: String,
    },
}

/// CrafterCMS Studio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrafterRoute {
    /// `POST /api/1/services/api/1/publish/cancel-publish-requests.json` (seed).
    CancelV1,
    /// `POST /studio/api/2/publish/cancel` (Studio 4.x).
    CancelV2,
    /// `GET /studio/api/2/publish/packages` (Studio 4.x's publishing queue).
    Packages,
}

/// Cloud Foundry: the root documents and v3 tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CfRoute {
    /// `GET /`: the links a client discovers everything else from.
    Root,
    /// `GET /v3`.
    V3Root,
    /// `POST /v3/tasks/{guid}/actions/cancel` (seed).
    Cancel { guid: String },
    /// `PUT /v3/tasks/{guid}/cancel`, what the cf CLI calls.
    CancelPut { guid: String },
    /// `GET /v3/tasks/{guid}`.
    Get { guid: String },
    /// `GET /v3/tasks`.
    List,
    /// `GET /v3/apps/{app_guid}/tasks`; an app is a pipeline.
    AppTasks { app_guid: String },
}

/// The OAuth token endpoint (UAA's shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UaaRoute {
    /// `POST /oauth/token`.
    Token,
}

impl Route {
    pub fn family(&self) -> Family {
        match self {
            Route::GoCd(_) => Family::GoCd,
            Route::CodeArts(_) => Family::CodeArts,
            Route::Crafter(CrafterRoute::CancelV1) => Family::Crafter,
            Route::Crafter(_) => Family::StudioV2,
            Route::CloudFoundry(_) => Family::CloudFoundry,
            Route::Uaa(_) => Family::Uaa,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi => Family::Operations,
        }
    }

    /// A bounded label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::GoCd(r) => match r {
                GoCdRoute::Cancel { .. } => "gocd_cancel",
                GoCdRoute::CancelInstance(_) => "gocd_cancel_instance",
                GoCdRoute::History { .. } => "gocd_history",
                GoCdRoute::StageInstanceLegacy(_) => "gocd_stage_instance_legacy",
                GoCdRoute::StageInstance(_) => "gocd_stage_instance",
                GoCdRoute::PipelineHistory { .. } => "gocd_pipeline_history",
                GoCdRoute::PipelineInstanceLegacy { .. } => "gocd_pipeline_instance_legacy",
                GoCdRoute::PipelineInstance { .. } => "gocd_pipeline_instance",
                GoCdRoute::Version => "gocd_version",
                GoCdRoute::About => "gocd_about",
            },
            Route::CodeArts(r) => match r {
                CodeArtsRoute::Stop => "codearts_stop",
                CodeArtsRoute::StopPath { .. } => "codearts_stop_path",
                CodeArtsRoute::Status { .. } => "codearts_status",
                CodeArtsRoute::History { .. } => "codearts_history",
                CodeArtsRoute::HistoryDetails { .. } => "codearts_history_details",
            },
            Route::Crafter(r) => match r {
                CrafterRoute::CancelV1 => "crafter_cancel",
                CrafterRoute::CancelV2 => "studio_cancel",
                CrafterRoute::Packages => "studio_packages",
            },
            Route::CloudFoundry(r) => match r {
                CfRoute::Root => "cf_root",
                CfRoute::V3Root => "cf_v3_root",
                CfRoute::Cancel { .. } => "cf_cancel",
                CfRoute::CancelPut { .. } => "cf_cancel_put",
                CfRoute::Get { .. } => "cf_get",
                CfRoute::List => "cf_list",
                CfRoute::AppTasks { .. } => "cf_app_tasks",
            },
            Route::Uaa(r) => match r {
                UaaRoute::Token => "uaa_token",
            },
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
        }
    }
}

/// Why no endpoint matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound(Family),
    MethodNotAllowed { family: Family, allow: &'static str },
}

/// The family that owns a path, for errors about paths that match nothing.
pub fn family_of(path: &str) -> Family {
    if path.starts_with("/go/") {
        Family::GoCd
    } else if path == "/v3/jobs" || path.starts_with("/v3/jobs/") {
        Family::CodeArts
    } else if path == "/" || path == "/v3" || path.starts_with("/v3/") {
        Family::CloudFoundry
    } else if path == "/oauth" || path.starts_with("/oauth/") {
        Family::Uaa
    } else if path.starts_with("/studio/api/2/") {
        Family::StudioV2
    } else if path.starts_with("/api/") || path.starts_with("/studio/") {
        Family::Crafter
    } else {
        Family::Operations
    }
}

fn decode(segment: &str) -> Option<String> {
    let s = percent_decode_str(segment).decode_utf8().ok()?.into_owned();
    (!s.is_empty()).then_some(s)
}

const GET: &str = "GET, HEAD";
const POST: &str = "POST";
const PUT: &str = "PUT";

/// Matches a request. HEAD is answered like GET.
pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let family = family_of(path);
    let segs: Vec<String> = if path == "/" {
        Vec::new()
    } else {
        let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match raw
            .iter()
            .map(|s| decode(s))
            .collect::<Option<Vec<String>>>()
        {
            Some(s) => s,
            None => return Err(NoRoute::NotFound(family)),
        }
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let own = |x: &str| x.to_string();
    let (route, allow) = match s.as_slice() {
        ["go", "about"] => (Route::GoCd(GoCdRoute::About), GET),
        ["go", "api", "version"] => (Route::GoCd(GoCdRoute::Version), GET),
        ["go", "api", "stages", p, st, "cancel"] => (
            Route::GoCd(GoCdRoute::Cancel {
                pipeline: own(p),
                stage: own(st),
            }),
            POST,
        ),
        ["go", "api", "stages", p, pc, st, sc, "cancel"] => (
            Route::GoCd(GoCdRoute::CancelInstance(instance(p, pc, st, sc))),
            POST,
        ),
        ["go", "api", "stages", p, st, "history"] => (
            Route::GoCd(GoCdRoute::History {
                pipeline: own(p),
                stage: own(st),
                offset: None,
            }),
            GET,
        ),
        ["go", "api", "stages", p, st, "history", off] => (
            Route::GoCd(GoCdRoute::History {
                pipeline: own(p),
                stage: own(st),
                offset: Some(own(off)),
            }),
            GET,
        ),
        ["go", "api", "stages", p, st, "instance", pc, sc] => (
            Route::GoCd(GoCdRoute::StageInstanceLegacy(instance(p, pc, st, sc))),
            GET,
        ),
        ["go", "api", "stages", p, pc, st, sc] => (
            Route::GoCd(GoCdRoute::StageInstance(instance(p, pc, st, sc))),
            GET,
        ),
        ["go", "api", "pipelines", p, "history"] => (
            Route::GoCd(GoCdRoute::PipelineHistory {
                pipeline: own(p),
                offset: None,
            }),
            GET,
        ),
        ["go", "api", "pipelines", p, "history", off] => (
            Route::GoCd(GoCdRoute::PipelineHistory {
                pipeline: own(p),
                offset: Some(own(off)),
            }),
            GET,
        ),
        ["go", "api", "pipelines", p, "instance", c] => (
            Route::GoCd(GoCdRoute::PipelineInstanceLegacy {
                pipeline: own(p),
                counter: own(c),
            }),
            GET,
        ),
        ["go", "api", "pipelines", p, c] => (
            Route::GoCd(GoCdRoute::PipelineInstance {
                pipeline: own(p),
                counter: own(c),
            }),
            GET,
        ),
        ["v3", "jobs", "stop"] => (Route::CodeArts(CodeArtsRoute::Stop), POST),
        ["v3", "jobs", job, build, "stop"] => (
            Route::CodeArts(CodeArtsRoute::StopPath {
                job_id: own(job),
                build_no: own(build),
            }),
            POST,
        ),
        ["v3", "jobs", job, "status"] => (
            Route::CodeArts(CodeArtsRoute::Status { job_id: own(job) }),
            GET,
        ),
        ["v3", "jobs", job, "history"] => (
            Route::CodeArts(CodeArtsRoute::History { job_id: own(job) }),
            GET,
        ),
        ["v3", "jobs", job, build, "history-details"] => (
            Route::CodeArts(CodeArtsRoute::HistoryDetails {
                job_id: own(job),
                build_number: own(build),
            }),
            GET,
        ),
        [
            "api",
            "1",
            "services",
            "api",
            "1",
            "publish",
            "cancel-publish-requests.json",
        ] => (Route::Crafter(CrafterRoute::CancelV1), POST),
        ["studio", "api", "2", "publish", "cancel"] => {
            (Route::Crafter(CrafterRoute::CancelV2), POST)
        }
        ["studio", "api", "2", "publish", "packages"] => {
            (Route::Crafter(CrafterRoute::Packages), GET)
        }
        ["v3", "tasks", guid, "actions", "cancel"] => (
            Route::CloudFoundry(CfRoute::Cancel { guid: own(guid) }),
            POST,
        ),
        ["v3", "tasks", guid, "cancel"] => (
            Route::CloudFoundry(CfRoute::CancelPut { guid: own(guid) }),
            PUT,
        ),
        ["v3", "tasks", guid] => (Route::CloudFoundry(CfRoute::Get { guid: own(guid) }), GET),
        ["v3", "tasks"] => (Route::CloudFoundry(CfRoute::List), GET),
        ["v3", "apps", app, "tasks"] => (
            Route::CloudFoundry(CfRoute::AppTasks { app_guid: own(app) }),
            GET,
        ),
        [] => (Route::CloudFoundry(CfRoute::Root), GET),
        ["v3"] => (Route::CloudFoundry(CfRoute::V3Root), GET),
        ["oauth", "token"] => (Route::Uaa(UaaRoute::Token), POST),
        ["healthz"] => (Route::Healthz, GET),
        ["readyz"] => (Route::Readyz, GET),
        ["metrics"] => (Route::Metrics, GET),
        ["openapi.json"] => (Route::OpenApi, GET),
        _ => return Err(NoRoute::NotFound(family)),
    };
    let ok = allow.split(", ").any(|m| m == method.as_str());
    if ok {
        Ok(route)
    } else {
        Err(NoRoute::MethodNotAllowed {
            family: route.family(),
            allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_the_documented_paths() {
        let cases: Vec<(Method, &str, Result<Route, NoRoute>)> = vec![
            (
                Method::POST,
                "/go/api/stages/demo_pipeline/first_stage/cancel",
                Ok(Route::GoCd(GoCdRoute::Cancel {
                    pipeline: "demo_pipeline".into(),
                    stage: "first_stage".into(),
                })),
            ),
            (
                Method::POST,
                "/go/api/stages/foo/2/DEV/1/cancel",
                Ok(Route::GoCd(GoCdRoute::CancelInstance(instance(
                    "foo", "2", "DEV", "1",
                )))),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history/0",
                Ok(Route::GoCd(GoCdRoute::History {
                    pipeline: "foo".into(),
                    stage: "DEV".into(),
                    offset: Some("0".into()),
                })),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history",
                Ok(Route::GoCd(GoCdRoute::History {
                    pipeline: "foo".into(),
                    stage: "DEV".into(),
                    offset: None,
                })),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history/",
                Err(NoRoute::NotFound(Family::GoCd)),
            ),
            (
                Method::POST,
                "/v3/jobs/stop",
                Ok(Route::CodeArts(CodeArtsRoute::Stop)),
            ),
            (
                Method::POST,
                "/v3/jobs/abc/20/stop",
                Ok(Route::CodeArts(CodeArtsRoute::StopPath {
                    job_id: "abc".into(),
                    build_no: "20".into(),
                })),
            ),
            (
                Method::GET,
                "/v3/jobs/abc/status",
                Ok(Route::CodeArts(CodeArtsRoute::Status {
                    job_id: "abc".into(),
                })),
            ),
            (
                Method::GET,
                "/v3/jobs/abc/history",
                Ok(Route::CodeArts(CodeArtsRoute::History {
                    job_id: "abc".into(),
                })),
            ),
            (
                Method::GET,
                "/v3/jobs/abc/20/history-details",
                Ok(Route::CodeArts(CodeArtsRoute::HistoryDetails {
                    job_id: "abc".into(),
                    build_number: "20".into(),
                })),
            ),
            (
                Method::POST,
                "/v3/jobs/abc/status",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::CodeArts,
                    allow: "GET, HEAD",
                }),
            ),
            (
                Method::POST,
                "/api/1/services/api/1/publish/cancel-publish-requests.json",
                Ok(Route::Crafter(CrafterRoute::CancelV1)),
            ),
            (
                Method::POST,
                "/v3/tasks/u-1/actions/cancel",
                Ok(Route::CloudFoundry(CfRoute::Cancel { guid: "u-1".into() })),
            ),
            (
                Method::GET,
                "/v3/tasks/u-1",
                Ok(Route::CloudFoundry(CfRoute::Get { guid: "u-1".into() })),
            ),
            (
                Method::PUT,
                "/v3/tasks/u-1/cancel",
                Ok(Route::CloudFoundry(CfRoute::CancelPut {
                    guid: "u-1".into(),
                })),
            ),
            (
                Method::POST,
                "/v3/tasks/u-1/cancel",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::CloudFoundry,
                    allow: "PUT",
                }),
            ),
            (
                Method::GET,
                "/v3/tasks",
                Ok(Route::CloudFoundry(CfRoute::List)),
            ),
            (
                Method::GET,
                "/v3/apps/foo/tasks",
                Ok(Route::CloudFoundry(CfRoute::AppTasks {
                    app_guid: "foo".into(),
                })),
            ),
            (Method::GET, "/", Ok(Route::CloudFoundry(CfRoute::Root))),
            (
                Method::HEAD,
                "/v3",
                Ok(Route::CloudFoundry(CfRoute::V3Root)),
            ),
            (
                Method::GET,
                "/v3/",
                Err(NoRoute::NotFound(Family::CloudFoundry)),
            ),
            (
                Method::POST,
                "/oauth/token",
                Ok(Route::Uaa(UaaRoute::Token)),
            ),
            (
                Method::GET,
                "/oauth/token",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::Uaa,
                    allow: "POST",
                }),
            ),
            (
                Method::GET,
                "/oauth/authorize",
                Err(NoRoute::NotFound(Family::Uaa)),
            ),
            (Method::HEAD, "/healthz", Ok(Route::Healthz)),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/instance/2/1",
                Ok(Route::GoCd(GoCdRoute::StageInstanceLegacy(instance(
                    "foo", "2", "DEV", "1",
                )))),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/2/DEV/1",
                Ok(Route::GoCd(GoCdRoute::StageInstance(instance(
                    "foo", "2", "DEV", "1",
                )))),
            ),
            (
                Method::GET,
                "/go/api/pipelines/foo/history/0",
                Ok(Route::GoCd(GoCdRoute::PipelineHistory {
                    pipeline: "foo".into(),
                    offset: Some("0".into()),
                })),
            ),
            (
                Method::GET,
                "/go/api/pipelines/foo/history",
                Ok(Route::GoCd(GoCdRoute::PipelineHistory {
                    pipeline: "foo".into(),
                    offset: None,
                })),
            ),
            (
                Method::GET,
                "/go/api/pipelines/foo/instance/2",
                Ok(Route::GoCd(GoCdRoute::PipelineInstanceLegacy {
                    pipeline: "foo".into(),
                    counter: "2".into(),
                })),
            ),
            (
                Method::GET,
                "/go/api/pipelines/foo/2",
                Ok(Route::GoCd(GoCdRoute::PipelineInstance {
                    pipeline: "foo".into(),
                    counter: "2".into(),
                })),
            ),
            (
                Method::GET,
                "/go/api/version",
                Ok(Route::GoCd(GoCdRoute::Version)),
            ),
            (Method::GET, "/go/about", Ok(Route::GoCd(GoCdRoute::About))),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/cancel",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::GoCd,
                    allow: "POST",
                }),
            ),
            (
                Method::DELETE,
                "/v3/tasks/u-1",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::CloudFoundry,
                    allow: "GET, HEAD",
                }),
            ),
            (
                Method::GET,
                "/v3/jobs/nope",
                Err(NoRoute::NotFound(Family::CodeArts)),
            ),
            (
                Method::GET,
                "/v3/apps/x/y",
                Err(NoRoute::NotFound(Family::CloudFoundry)),
            ),
            (
                Method::GET,
                "/api/2/x",
                Err(NoRoute::NotFound(Family::Crafter)),
            ),
            (
                Method::POST,
                "/studio/api/2/publish/cancel",
                Ok(Route::Crafter(CrafterRoute::CancelV2)),
            ),
            (
                Method::HEAD,
                "/studio/api/2/publish/packages",
                Ok(Route::Crafter(CrafterRoute::Packages)),
            ),
            (
                Method::POST,
                "/studio/api/2/publish/packages",
                Err(NoRoute::MethodNotAllowed {
                    family: Family::StudioV2,
                    allow: "GET, HEAD",
                }),
            ),
            (
                Method::GET,
                "/studio/api/2/publish/nothing",
                Err(NoRoute::NotFound(Family::StudioV2)),
            ),
            (
                Method::GET,
                "/studio/api/1/x",
                Err(NoRoute::NotFound(Family::Crafter)),
            ),
            (
                Method::GET,
                "/nothing",
                Err(NoRoute::NotFound(Family::Operations)),
            ),
            (
                Method::POST,
                "/go/api/stages/my%20pipe/DEV/cancel",
                Ok(Route::GoCd(GoCdRoute::Cancel {
                    pipeline: "my pipe".into(),
                    stage: "DEV".into(),
                })),
            ),
            (
                Method::POST,
                "/go/api/stages/%FF/DEV/cancel",
                Err(NoRoute::NotFound(Family::GoCd)),
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(&method, path), want, "{method} {path}");
        }
    }
}
