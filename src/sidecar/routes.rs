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
    CloudFoundry,
    Operations,
}

/// A recognised endpoint with its path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    GoCdCancel {
        pipeline: String,
        stage: String,
    },
    GoCdCancelInstance {
        pipeline: String,
        pipeline_counter: String,
        stage: String,
        stage_counter: String,
    },
    GoCdHistory {
        pipeline: String,
        stage: String,
        offset: Option<String>,
    },
    CodeArtsStop,
    CodeArtsStopPath {
        job_id: String,
        build_no: String,
    },
    CrafterCancel,
    CfCancel {
        guid: String,
    },
    CfGet {
        guid: String,
    },
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

impl Route {
    pub fn family(&self) -> Family {
        match self {
            Route::GoCdCancel { .. }
            | Route::GoCdCancelInstance { .. }
            | Route::GoCdHistory { .. } => Family::GoCd,
            Route::CodeArtsStop | Route::CodeArtsStopPath { .. } => Family::CodeArts,
            Route::CrafterCancel => Family::Crafter,
            Route::CfCancel { .. } | Route::CfGet { .. } => Family::CloudFoundry,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi => Family::Operations,
        }
    }

    /// A bounded label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::GoCdCancel { .. } => "gocd_cancel",
            Route::GoCdCancelInstance { .. } => "gocd_cancel_instance",
            Route::GoCdHistory { .. } => "gocd_history",
            Route::CodeArtsStop => "codearts_stop",
            Route::CodeArtsStopPath { .. } => "codearts_stop_path",
            Route::CrafterCancel => "crafter_cancel",
            Route::CfCancel { .. } => "cf_cancel",
            Route::CfGet { .. } => "cf_get",
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
    } else if path.starts_with("/v3/jobs") {
        Family::CodeArts
    } else if path.starts_with("/v3/") {
        Family::CloudFoundry
    } else if path.starts_with("/api/") {
        Family::Crafter
    } else {
        Family::Operations
    }
}

fn decode(segment: &str) -> Option<String> {
    let s = percent_decode_str(segment).decode_utf8().ok()?.into_owned();
    (!s.is_empty()).then_some(s)
}

/// Matches a request. HEAD is answered like GET.
pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let family = family_of(path);
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(segs) = raw
        .iter()
        .map(|s| decode(s))
        .collect::<Option<Vec<String>>>()
    else {
        return Err(NoRoute::NotFound(family));
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (route, allow) = match s.as_slice() {
        ["go", "api", "stages", p, st, "cancel"] => (
            Route::GoCdCancel {
                pipeline: p.to_string(),
                stage: st.to_string(),
            },
            "POST",
        ),
        ["go", "api", "stages", p, pc, st, sc, "cancel"] => (
            Route::GoCdCancelInstance {
                pipeline: p.to_string(),
                pipeline_counter: pc.to_string(),
                stage: st.to_string(),
                stage_counter: sc.to_string(),
            },
            "POST",
        ),
        ["go", "api", "stages", p, st, "history"] => (
            Route::GoCdHistory {
                pipeline: p.to_string(),
                stage: st.to_string(),
                offset: None,
            },
            "GET",
        ),
        ["go", "api", "stages", p, st, "history", off] => (
            Route::GoCdHistory {
                pipeline: p.to_string(),
                stage: st.to_string(),
                offset: Some(off.to_string()),
            },
            "GET",
        ),
        ["v3", "jobs", "stop"] => (Route::CodeArtsStop, "POST"),
        ["v3", "jobs", job, build, "stop"] => (
            Route::CodeArtsStopPath {
                job_id: job.to_string(),
                build_no: build.to_string(),
            },
            "POST",
        ),
        [
            "api",
            "1",
            "services",
            "api",
            "1",
            "publish",
            "cancel-publish-requests.json",
        ] => (Route::CrafterCancel, "POST"),
        ["v3", "tasks", guid, "actions", "cancel"] => (
            Route::CfCancel {
                guid: guid.to_string(),
            },
            "POST",
        ),
        ["v3", "tasks", guid] => (
            Route::CfGet {
                guid: guid.to_string(),
            },
            "GET",
        ),
        ["healthz"] => (Route::Healthz, "GET"),
        ["readyz"] => (Route::Readyz, "GET"),
        ["metrics"] => (Route::Metrics, "GET"),
        ["openapi.json"] => (Route::OpenApi, "GET"),
        _ => return Err(NoRoute::NotFound(family)),
    };
    let ok = match allow {
        "GET" => method == Method::GET || method == Method::HEAD,
        _ => method == Method::POST,
    };
    if ok {
        Ok(route)
    } else {
        Err(NoRoute::MethodNotAllowed {
            family: route.family(),
            allow: if allow == "GET" { "GET, HEAD" } else { allow },
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
                Ok(Route::GoCdCancel {
                    pipeline: "demo_pipeline".into(),
                    stage: "first_stage".into(),
                }),
            ),
            (
                Method::POST,
                "/go/api/stages/foo/2/DEV/1/cancel",
                Ok(Route::GoCdCancelInstance {
                    pipeline: "foo".into(),
                    pipeline_counter: "2".into(),
                    stage: "DEV".into(),
                    stage_counter: "1".into(),
                }),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history/0",
                Ok(Route::GoCdHistory {
                    pipeline: "foo".into(),
                    stage: "DEV".into(),
                    offset: Some("0".into()),
                }),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history",
                Ok(Route::GoCdHistory {
                    pipeline: "foo".into(),
                    stage: "DEV".into(),
                    offset: None,
                }),
            ),
            (
                Method::GET,
                "/go/api/stages/foo/DEV/history/",
                Err(NoRoute::NotFound(Family::GoCd)),
            ),
            (Method::POST, "/v3/jobs/stop", Ok(Route::CodeArtsStop)),
            (
                Method::POST,
                "/v3/jobs/abc/20/stop",
                Ok(Route::CodeArtsStopPath {
                    job_id: "abc".into(),
                    build_no: "20".into(),
                }),
            ),
            (
                Method::POST,
                "/api/1/services/api/1/publish/cancel-publish-requests.json",
                Ok(Route::CrafterCancel),
            ),
            (
                Method::POST,
                "/v3/tasks/u-1/actions/cancel",
                Ok(Route::CfCancel { guid: "u-1".into() }),
            ),
            (
                Method::GET,
                "/v3/tasks/u-1",
                Ok(Route::CfGet { guid: "u-1".into() }),
            ),
            (Method::HEAD, "/healthz", Ok(Route::Healthz)),
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
                "/v3/apps",
                Err(NoRoute::NotFound(Family::CloudFoundry)),
            ),
            (
                Method::GET,
                "/api/2/x",
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
                Ok(Route::GoCdCancel {
                    pipeline: "my pipe".into(),
                    stage: "DEV".into(),
                }),
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
