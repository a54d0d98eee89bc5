//! openapi/openapi.json against the running sidecar: every route the server
//! answers is documented, every documented path is answered, the methods
//! match, and a representative answer for every documented operation and
//! status code validates against the document's schema.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use cancel_operator::crd::{StagePhase, StageRun};
use cancel_operator::sidecar;
use cancel_operator::sidecar::routes::{
    self, CfRoute, CodeArtsRoute, CrafterRoute, GoCdRoute, Route, UaaRoute,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::world::{self, PASSWORD, UsersFile};
use support::{TestNamespace, User, raw_http, stage_run, wait_for};
use warp::http::Method;

const T: Duration = Duration::from_secs(90);
const JOB: &str = "f9d6c8466d614a9788e9a0acf6c15f46";

/// The documented path of each route the server knows, with its method.
/// Exhaustive on purpose: a new route does not compile until it is mapped
/// here, and the test fails until it is documented.
fn documented_as(route: &Route) -> (&'static str, &'static str) {
    match route {
        Route::GoCd(r) => match r {
            GoCdRoute::Cancel { .. } => ("post", "/go/api/stages/{pipeline}/{stage}/cancel"),
            GoCdRoute::CancelInstance { .. } => (
                "post",
                "/go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}/cancel",
            ),
            GoCdRoute::History { offset: None, .. } => {
                ("get", "/go/api/stages/{pipeline}/{stage}/history")
            }
            GoCdRoute::History {
                offset: Some(_), ..
            } => ("get", "/go/api/stages/{pipeline}/{stage}/history/{offset}"),
            GoCdRoute::StageInstanceLegacy { .. } => (
                "get",
                "/go/api/stages/{pipeline}/{stage}/instance/{pipeline_counter}/{stage_counter}",
            ),
            GoCdRoute::StageInstance { .. } => (
                "get",
                "/go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}",
            ),
            GoCdRoute::PipelineHistory { offset: None, .. } => {
                ("get", "/go/api/pipelines/{pipeline}/history")
            }
            GoCdRoute::PipelineHistory {
                offset: Some(_), ..
            } => ("get", "/go/api/pipelines/{pipeline}/history/{offset}"),
            GoCdRoute::PipelineInstanceLegacy { .. } => {
                ("get", "/go/api/pipelines/{pipeline}/instance/{counter}")
            }
            GoCdRoute::PipelineInstance { .. } => ("get", "/go/api/pipelines/{pipeline}/{counter}"),
            GoCdRoute::Version => ("get", "/go/api/version"),
            GoCdRoute::About => ("get", "/go/about"),
        },
        Route::CodeArts(r) => match r {
            CodeArtsRoute::Stop => ("post", "/v3/jobs/stop"),
            CodeArtsRoute::StopPath { .. } => ("post", "/v3/jobs/{job_id}/{build_no}/stop"),
            CodeArtsRoute::Status { .. } => ("get", "/v3/jobs/{job_id}/status"),
            CodeArtsRoute::History { .. } => ("get", "/v3/jobs/{job_id}/history"),
            CodeArtsRoute::HistoryDetails { .. } => {
                ("get", "/v3/jobs/{job_id}/{build_number}/history-details")
            }
        },
        Route::Crafter(r) => match r {
            CrafterRoute::CancelV1 => (
                "post",
                "/api/1/services/api/1/publish/cancel-publish-requests.json",
            ),
            CrafterRoute::CancelV2 => ("post", "/studio/api/2/publish/cancel"),
            CrafterRoute::Packages => ("get", "/studio/api/2/publish/packages"),
        },
        Route::CloudFoundry(r) => match r {
            CfRoute::Root => ("get", "/"),
            CfRoute::V3Root => ("get", "/v3"),
            CfRoute::Cancel { .. } => ("post", "/v3/tasks/{guid}/actions/cancel"),
            CfRoute::CancelPut { .. } => ("put", "/v3/tasks/{guid}/cancel"),
            CfRoute::Get { .. } => ("get", "/v3/tasks/{guid}"),
            CfRoute::List => ("get", "/v3/tasks"),
            CfRoute::AppTasks { .. } => ("get", "/v3/apps/{app_guid}/tasks"),
        },
        Route::Uaa(r) => match r {
            UaaRoute::Token => ("post", "/oauth/token"),
        },
        Route::Healthz => ("get", "/healthz"),
        Route::Readyz => ("get", "/readyz"),
        Route::Metrics => ("get", "/metrics"),
        Route::OpenApi => ("get", "/openapi.json"),
    }
}

// ---------------------------------------------------------------------------
// Harness: the namespace served as in the other sidecar tests, and two
// more sidecars for the answers the first cannot give.

struct World {
    /// The controller, the grants and the sidecar under test.
    served: world::Served,
    /// A sidecar whose Kubernetes client has no rights: its TokenReviews and
    /// SubjectAccessReviews fail and its cache never syncs, which is how the
    /// "Kubernetes unreachable" answers (500, 503) are produced.
    broken: SocketAddr,
    /// A sidecar that waits a second for a request body (the 408 answers).
    slow: SocketAddr,
    /// Kept for the sidecars' lifetime.
    _users: UsersFile,
    _sidecars: world::AbortOnDrop,
}

async fn setup() -> World {
    let ns = TestNamespace::new("sc-openapi").await;
    let users = UsersFile::new(&ns.name);
    let served = world::serve(ns, Some(&users.path)).await;
    let name = served.ns.name.as_str();
    let ttl = Duration::from_secs(1);
    let (broken, broken_server) = world::spawn_sidecar(
        support::client(User::Nobody).await,
        name,
        Some(&users.path),
        ttl,
    )
    .await;
    let (slow, slow_server) = world::spawn_sidecar_limited(
        support::client(User::Admin).await,
        &[name],
        Some(&users.path),
        ttl,
        sidecar::Limits {
            body_read_timeout: Duration::from_secs(1),
            ..sidecar::Limits::default()
        },
    )
    .await;
    world::wait_ready(&served.http, slow).await;
    World {
        served,
        broken,
        slow,
        _users: users,
        _sidecars: world::AbortOnDrop(vec![
            broken_server.abort_handle(),
            slow_server.abort_handle(),
        ]),
    }
}

fn stagerun(name: &str, of: (&str, i64, &str), sim: Value) -> StageRun {
    stage_run(name).of(of).job("UnitTest", sim).build()
}

// ---------------------------------------------------------------------------
// Requests.

#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    Admin,
    Viewer,
    Operator,
    /// A valid token without any rights.
    Nobody,
}

#[derive(Clone)]
enum Body {
    None,
    Bytes(Vec<u8>),
    /// Chunked transfer encoding with a malformed chunk: a body that cannot be read.
    Broken,
    /// A body that stops arriving after its first byte.
    Stalled,
    /// No body, after more header fields than the server takes.
    Crowded,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::None => f.write_str("no body"),
            Body::Bytes(b) if b.len() > 200 => write!(f, "a {}-byte body", b.len()),
            Body::Bytes(b) => write!(f, "body {}", String::from_utf8_lossy(b)),
            Body::Broken => f.write_str("a malformed chunked body"),
            Body::Stalled => f.write_str("a stalled body"),
            Body::Crowded => f.write_str("too many header fields"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Main,
    Broken,
    Slow,
}

struct Reply {
    status: u16,
    content_type: String,
    allow: Option<String>,
    body: String,
}

fn basic(user: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"));
    format!("Basic {b64}")
}

fn auth_header(caller: Caller) -> Option<String> {
    match caller {
        Caller::Anonymous => None,
        Caller::Admin => Some(basic("admin")),
        Caller::Viewer => Some(format!("Bearer {}", support::token(User::Viewer))),
        Caller::Operator => Some(format!("Bearer {}", support::token(User::Operator))),
        Caller::Nobody => Some(format!("Bearer {}", support::token(User::Nobody))),
    }
}

impl World {
    async fn send(
        &self,
        server: Server,
        method: &str,
        path: &str,
        caller: Caller,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Reply {
        let addr = match server {
            Server::Main => self.served.addr,
            Server::Broken => self.broken,
            Server::Slow => self.slow,
        };
        if matches!(body, Body::Broken | Body::Stalled | Body::Crowded) {
            return raw_request(addr, method, path, headers, body).await;
        }
        let mut req = self.served.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("http://{addr}{path}"),
        );
        if let Some(a) = auth_header(caller) {
            req = req.header("Authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Body::Bytes(b) = body {
            req = req.body(b.clone());
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_type = header("content-type").unwrap_or_default();
        let allow = header("allow");
        let body = r.text().await.unwrap();
        Reply {
            status,
            content_type,
            allow,
            body,
        }
    }
}

/// Sends a request no HTTP client library sends (a malformed chunked body,
/// a stalled body, too many header fields) over a raw connection.
async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Body,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Body::Broken => {
            req.push_str("Transfer-Encoding: chunked\r\n\r\nZZZ\r\nnot a chunk\r\n0\r\n\r\n")
        }
        Body::Stalled => req.push_str("Content-Length: 10\r\n\r\n{"),
        Body::Crowded => {
            for i in 0..150 {
                req.push_str(&format!("X-Field-{i}: v\r\n"));
            }
            req.push_str("\r\n");
        }
        Body::None | Body::Bytes(_) => unreachable!("sent by reqwest"),
    }
    let answer = raw_http::exchange(&addr.to_string(), &req, T).await;
    if answer.header("transfer-encoding").is_some() {
        panic!("unexpected chunked answer: {}", answer.raw);
    }
    let content_type = answer
        .header("content-type")
        .unwrap_or_default()
        .to_string();
    let allow = answer.header("allow").map(str::to_string);
    Reply {
        status: answer.status,
        content_type,
        allow,
        body: answer.body,
    }
}

// ---------------------------------------------------------------------------
// The document.

fn document() -> Value {
    serde_json::from_str(cancel_operator::sidecar::OPENAPI).expect("openapi.json is JSON")
}

/// A validator for `schema`, a part of `doc`: the document's components are
/// embedded so that `#/components/...` references resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("components".into(), doc["components"].clone());
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("invalid schema {schema}: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The documented path template a concrete path belongs to: `{x}` matches
/// one segment; the template with the most literal segments wins. A query
/// string is not part of the path.
fn template_of<'d>(doc: &'d Value, path: &str) -> Option<&'d str> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|t| {
            let tsegs: Vec<&str> = t.split('/').collect();
            if tsegs.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (a, b) in tsegs.iter().zip(&segs) {
                if a.starts_with('{') && a.ends_with('}') {
                    if b.is_empty() {
                        return None;
                    }
                } else if a == b {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, t.as_str()))
        })
        .max()
        .map(|(_, t)| t)
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

fn instantiate(template: &str, params: &BTreeMap<&str, String>) -> String {
    let mut path = template.to_string();
    for (k, v) in params {
        path = path.replace(&format!("{{{k}}}"), v);
    }
    assert!(!path.contains('{'), "no sample value for {template}");
    path
}

/// The path patterns of the router's table, read from its source: one per
/// arm of the match in `routes::route`, each segment a literal (`Some`) or a
/// binding (`None`). Read from the source because the table is the one list
/// of what the server answers: a route added there is checked here without
/// anyone adding a sample for it.
fn router_patterns() -> Vec<Vec<Option<String>>> {
    const SOURCE: &str = include_str!("../src/sidecar/routes.rs");
    let table = SOURCE
        .split("match s.as_slice() {")
        .nth(1)
        .expect("the router's match on the path segments");
    let table = table
        .split("_ => return Err(NoRoute::NotFound(family))")
        .next()
        .expect("the router's fallback arm");
    let mut patterns = Vec::new();
    let mut rest = table;
    while let Some(open) = rest.find('[') {
        let close = open + rest[open..].find(']').expect("a closed slice pattern");
        if rest[close + 1..].trim_start().starts_with("=>") {
            let segments = rest[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.strip_prefix('"')
                        .and_then(|s| s.strip_suffix('"'))
                        .map(String::from)
                })
                .collect();
            patterns.push(segments);
        }
        rest = &rest[close + 1..];
    }
    assert!(patterns.len() > 10, "the router's table was not found");
    patterns
}

/// A path matching `pattern`, with a value no literal segment has for
/// each binding.
fn sample_path(pattern: &[Option<String>]) -> String {
    let segments: Vec<&str> = pattern
        .iter()
        .map(|s| s.as_deref().unwrap_or("x1"))
        .collect();
    format!("/{}", segments.join("/"))
}

/// The methods the router takes on `path` (HEAD aside, which is GET's).
fn routed_methods(path: &str) -> Vec<Method> {
    let allow = match routes::route(&Method::OPTIONS, path) {
        Err(routes::NoRoute::MethodNotAllowed { allow, .. }) => allow,
        other => panic!("OPTIONS {path}: {other:?}"),
    };
    allow
        .split(", ")
        .filter(|m| *m != "HEAD")
        .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
        .collect()
}

/// True for the answer to a path the server does not know, in any family.
fn is_generic_not_found(r: &Reply) -> bool {
    if r.status != 404 {
        return false;
    }
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    r.body == "Not Found"
        || r.body == "not found"
        || v == json!({"message": "Not Found"})
        || v["error_code"] == "CB.00060222"
        || v["errors"][0]["code"] == 10000
}

// ---------------------------------------------------------------------------

/// Every route the server answers is documented, with its method: one path
/// for each arm of the router's table, whichever route it is. Returns the
/// documented operations so found.
fn served_operations(doc: &Value) -> BTreeSet<(&'static str, &'static str)> {
    let arms = router_patterns();
    let mut served = BTreeSet::new();
    for pattern in &arms {
        let path = sample_path(pattern);
        for method in routed_methods(&path) {
            let route = routes::route(&method, &path)
                .unwrap_or_else(|e| panic!("{method} {path} is not routed: {e:?}"));
            let (m, template) = documented_as(&route);
            assert_eq!(m, method.as_str().to_ascii_lowercase());
            assert!(
                doc["paths"][template][m].is_object(),
                "{method} {template} is served but not documented"
            );
            assert_eq!(template_of(doc, &path), Some(template), "{path}");
            served.insert((m, template));
        }
    }
    assert_eq!(
        arms.len(),
        served.len(),
        "each arm of the router is one documented operation: {served:?}"
    );
    served
}

#[test]
fn every_route_is_documented() {
    let doc = document();
    let served = served_operations(&doc);
    assert_eq!(
        operations(&doc).len(),
        served.len(),
        "documented operations vs served routes: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_server() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let w = setup().await;
    let runs: Api<StageRun> = w.served.ns.api();
    for (name, key, annotations) in [
        (
            "foo-1-dev",
            ("foo", 1, "DEV"),
            json!({"sim.cancel.dev/run-for": "1s"}),
        ),
        (
            "foo-2-uattest",
            ("foo", 2, "UATTest"),
            json!({"sim.cancel.dev/run-for": "1h"}),
        ),
        (
            "build-19",
            (JOB, 19, "build"),
            json!({"sim.cancel.dev/run-for": "1s"}),
        ),
        (
            "foo-3-uattest",
            ("foo", 3, "UATTest"),
            json!({"sim.cancel.dev/run-for": "1h"}),
        ),
    ] {
        runs.create(&PostParams::default(), &stagerun(name, key, annotations))
            .await
            .unwrap();
    }
    let mut uid = BTreeMap::new();
    for (name, want, state) in [
        ("foo-1-dev", StagePhase::Succeeded, "SUCCEEDED"),
        ("foo-2-uattest", StagePhase::Running, "RUNNING"),
        ("build-19", StagePhase::Succeeded, "SUCCEEDED"),
        ("foo-3-uattest", StagePhase::Running, "RUNNING"),
    ] {
        let sr = wait_for(&runs, name, &format!("{name} {want:?}"), T, |sr| {
            sr.status.as_ref().and_then(|s| s.phase) == Some(want)
        })
        .await;
        world::wait_cached(
            &w.served.http,
            &format!("http://{}", w.served.addr),
            &sr.uid().unwrap(),
            state,
        )
        .await;
        uid.insert(name, sr.uid().unwrap());
    }
    let params: BTreeMap<&str, String> = BTreeMap::from([
        ("pipeline", "foo".to_string()),
        ("stage", "DEV".to_string()),
        ("pipeline_counter", "1".to_string()),
        ("stage_counter", "1".to_string()),
        ("offset", "0".to_string()),
        ("job_id", JOB.to_string()),
        ("build_no", "19".to_string()),
        ("build_number", "19".to_string()),
        ("guid", uid["foo-1-dev"].clone()),
        ("app_guid", "foo".to_string()),
        ("counter", "1".to_string()),
    ]);

    // 1. Every route the server answers is documented (also a test of its
    //    own, below, that needs no cluster).
    let served = served_operations(&doc);

    // 2. Every documented operation is answered, by the route it documents,
    //    and the methods the server allows are the documented ones.
    let ops = operations(&doc);
    assert_eq!(
        ops.len(),
        served.len(),
        "documented operations vs served routes: {served:?}"
    );
    let mut methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (template, method, _) in &ops {
        methods
            .entry(template.clone())
            .or_default()
            .insert(method.to_ascii_uppercase());
    }
    for (template, method, op) in &ops {
        let path = instantiate(template, &params);
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let route = routes::route(&m, &path)
            .unwrap_or_else(|e| panic!("documented {method} {template} is not routed: {e:?}"));
        assert_eq!(
            documented_as(&route),
            (method.as_str(), template.as_str()),
            "{path}"
        );
        let body = if op.get("requestBody").is_some() {
            Body::Bytes(b"{}".to_vec())
        } else {
            Body::None
        };
        let r = w
            .send(Server::Main, m.as_str(), &path, Caller::Admin, &[], &body)
            .await;
        assert!(
            !is_generic_not_found(&r) && r.status != 405,
            "documented {method} {template} answered {} {}",
            r.status,
            r.body
        );
        let r = w
            .send(
                Server::Main,
                "PATCH",
                &path,
                Caller::Admin,
                &[],
                &Body::None,
            )
            .await;
        assert_eq!(r.status, 405, "PATCH {path}");
        let mut want = methods[template].clone();
        if want.contains("GET") {
            want.insert("HEAD".into());
        }
        let allow: BTreeSet<String> = r
            .allow
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        assert_eq!(allow, want, "Allow of {template}");
    }

    // 3. The document's own examples fit its schemas.
    for (template, method, op) in &ops {
        let mut media: Vec<(String, &Value)> = Vec::new();
        if let Some(content) = op["requestBody"]["content"].as_object() {
            media.extend(content.iter().map(|(k, v)| (format!("request {k}"), v)));
        }
        for (code, resp) in op["responses"].as_object().unwrap() {
            if let Some(content) = resp["content"].as_object() {
                media.extend(content.iter().map(|(k, v)| (format!("{code} {k}"), v)));
            }
        }
        for (what, m) in media {
            let v = validator(&doc, &m["schema"]);
            let mut examples: Vec<&Value> = m.get("example").into_iter().collect();
            if let Some(ex) = m["examples"].as_object() {
                examples.extend(ex.values().map(|e| &e["value"]));
            }
            for ex in examples {
                let errs = errors(&v, ex);
                assert!(
                    errs.is_empty(),
                    "example of {method} {template} {what}: {errs:?}"
                );
            }
        }
    }

    // 4. A representative answer for every documented status code of every
    //    operation validates against the schema documented for it.
    let json_accept: &[(&str, &str)] = &[("Accept", "application/json")];
    let big = Body::Bytes(vec![b' '; 64 * 1024 + 1]);
    let broken = Body::Broken;
    let none = Body::None;
    let json_body = |v: Value| Body::Bytes(v.to_string().into_bytes());
    let ca_ok = json_body(json!({"job_id": JOB, "build_no": "19"}));
    let crafter_ok = json_body(json!({"site_id": "foo", "package_ids": [uid["foo-1-dev"]]}));
    let done = uid["foo-1-dev"].clone();
    let active = uid["foo-2-uattest"].clone();
    let cf_cancel = format!("/v3/tasks/{done}/actions/cancel");
    let cf_get = format!("/v3/tasks/{done}");
    let unknown_task = "/v3/tasks/00000000-0000-0000-0000-000000000000".to_string();
    use Caller::*;
    use Server::{Broken as Down, Main, Slow};
    #[allow(clippy::type_complexity)]
    let mut calls: Vec<(Server, &str, String, Caller, &[(&str, &str)], &Body, u16)> = Vec::new();
    for cancel in ["/go/api/stages/foo/DEV/cancel"] {
        let nope = cancel.replace("foo", "nope");
        for accept in [&[][..], json_accept] {
            calls.extend([
                (Main, "POST", cancel.to_string(), Admin, accept, &none, 200),
                (
                    Main,
                    "POST",
                    cancel.to_string(),
                    Anonymous,
                    accept,
                    &none,
                    401,
                ),
                (Main, "POST", cancel.to_string(), Viewer, accept, &none, 401),
                (Main, "POST", nope.clone(), Admin, accept, &none, 404),
                (Main, "GET", cancel.to_string(), Admin, accept, &none, 405),
                (Main, "POST", cancel.to_string(), Admin, accept, &big, 413),
                (
                    Main,
                    "POST",
                    cancel.to_string(),
                    Admin,
                    accept,
                    &broken,
                    400,
                ),
                (
                    Down,
                    "POST",
                    cancel.to_string(),
                    Operator,
                    accept,
                    &none,
                    503,
                ),
            ]);
        }
    }
    // The current per-instance cancel: versioned Accept and X-GoCD-Confirm.
    let current: &[(&str, &str)] = &[
        ("Accept", "application/vnd.go.cd.v3+json"),
        ("X-GoCD-Confirm", "true"),
    ];
    let unversioned: &[(&str, &str)] = &[("X-GoCD-Confirm", "true")];
    let unconfirmed: &[(&str, &str)] = &[("Accept", "application/vnd.go.cd+json")];
    let text_body: &[(&str, &str)] = &[
        ("Accept", "application/vnd.go.cd.v3+json"),
        ("Content-Type", "text/plain"),
    ];
    let x_body = Body::Bytes(b"x".to_vec());
    let instance = "/go/api/stages/foo/1/DEV/1/cancel".to_string();
    let instance_nope = "/go/api/stages/nope/1/DEV/1/cancel".to_string();
    calls.extend([
        (Main, "POST", instance.clone(), Admin, current, &none, 200),
        (
            Main,
            "POST",
            instance.clone(),
            Anonymous,
            current,
            &none,
            401,
        ),
        (Main, "POST", instance.clone(), Viewer, current, &none, 403),
        (
            Main,
            "POST",
            instance_nope.clone(),
            Admin,
            current,
            &none,
            404,
        ),
        (
            Main,
            "POST",
            instance.clone(),
            Admin,
            unversioned,
            &none,
            404,
        ),
        (
            Main,
            "POST",
            instance.clone(),
            Admin,
            unconfirmed,
            &none,
            400,
        ),
        (
            Main,
            "POST",
            instance.clone(),
            Admin,
            text_body,
            &x_body,
            415,
        ),
        (Main, "GET", instance.clone(), Admin, current, &none, 405),
        (Main, "POST", instance.clone(), Admin, current, &big, 413),
        (Main, "POST", instance.clone(), Admin, current, &broken, 400),
        (
            Down,
            "POST",
            instance.clone(),
            Operator,
            current,
            &none,
            503,
        ),
    ]);
    for history in [
        "/go/api/stages/foo/DEV/history",
        "/go/api/stages/foo/DEV/history/0",
    ] {
        let nope = history.replace("foo", "nope");
        for accept in [&[][..], json_accept] {
            calls.extend([
                (Main, "GET", history.to_string(), Admin, accept, &none, 200),
                (
                    Main,
                    "GET",
                    history.to_string(),
                    Anonymous,
                    accept,
                    &none,
                    401,
                ),
                (Main, "GET", nope.clone(), Admin, accept, &none, 404),
                (Main, "POST", history.to_string(), Admin, accept, &none, 405),
                (Main, "GET", history.to_string(), Admin, accept, &big, 413),
                (
                    Main,
                    "GET",
                    history.to_string(),
                    Admin,
                    accept,
                    &broken,
                    400,
                ),
                (
                    Down,
                    "GET",
                    history.to_string(),
                    Operator,
                    accept,
                    &none,
                    503,
                ),
            ]);
        }
    }
    for accept in [&[][..], json_accept] {
        calls.push((
            Main,
            "GET",
            "/go/api/stages/foo/DEV/history/-1".into(),
            Admin,
            accept,
            &none,
            400,
        ));
    }
    // The GoCD reads beside a cancel: legacy forms answer whatever `Accept`
    // says, current forms want their GoCD media type.
    let v1: &[(&str, &str)] = &[("Accept", "application/vnd.go.cd.v1+json")];
    let v3: &[(&str, &str)] = &[("Accept", "application/vnd.go.cd.v3+json")];
    let latest: &[(&str, &str)] = &[("Accept", "application/vnd.go.cd+json")];
    let stage_history = "/go/api/stages/foo/DEV/history".to_string();
    calls.extend([
        (Main, "GET", stage_history.clone(), Viewer, v3, &none, 200),
        (
            Main,
            "GET",
            format!("{stage_history}?page_size=10&after=0&before="),
            Viewer,
            latest,
            &none,
            200,
        ),
        (
            Main,
            "GET",
            "/go/api/stages/nope/DEV/history".into(),
            Viewer,
            v3,
            &none,
            200,
        ),
        (
            Main,
            "GET",
            format!("{stage_history}?page_size=9"),
            Viewer,
            v3,
            &none,
            400,
        ),
        (
            Main,
            "GET",
            format!("{stage_history}?after=-1"),
            Viewer,
            json_accept,
            &none,
            400,
        ),
        (
            Main,
            "GET",
            format!("{stage_history}?before=x"),
            Viewer,
            &[],
            &none,
            400,
        ),
        (
            Main,
            "GET",
            stage_history.clone(),
            Anonymous,
            v3,
            &none,
            401,
        ),
        (Main, "GET", stage_history.clone(), Nobody, &[], &none, 401),
        (Main, "GET", stage_history.clone(), Nobody, v3, &none, 403),
        (Main, "GET", stage_history.clone(), Viewer, v1, &none, 404),
        (Down, "GET", stage_history.clone(), Operator, v3, &none, 503),
    ]);
    let legacy_stage = "/go/api/stages/foo/DEV/instance/1/1".to_string();
    let pipeline_history = "/go/api/pipelines/foo/history".to_string();
    let pipeline_history_at = "/go/api/pipelines/foo/history/0".to_string();
    let legacy_pipeline = "/go/api/pipelines/foo/instance/1".to_string();
    for accept in [&[][..], json_accept] {
        for read in [
            &legacy_stage,
            &pipeline_history,
            &pipeline_history_at,
            &legacy_pipeline,
        ] {
            calls.extend([
                (Main, "GET", read.clone(), Viewer, accept, &none, 200),
                (Main, "GET", read.clone(), Viewer, accept, &broken, 400),
                (Main, "GET", read.clone(), Anonymous, accept, &none, 401),
                (Main, "GET", read.clone(), Nobody, accept, &none, 401),
                (
                    Main,
                    "GET",
                    read.replace("foo", "nope"),
                    Viewer,
                    accept,
                    &none,
                    404,
                ),
                (Main, "POST", read.clone(), Viewer, accept, &none, 405),
                (Main, "GET", read.clone(), Viewer, accept, &big, 413),
                (Down, "GET", read.clone(), Operator, accept, &none, 503),
            ]);
        }
        calls.extend([
            (
                Main,
                "GET",
                "/go/api/stages/foo/DEV/instance/9/1".into(),
                Viewer,
                accept,
                &none,
                404,
            ),
            (
                Main,
                "GET",
                "/go/api/stages/foo/DEV/instance/1/x".into(),
                Viewer,
                accept,
                &none,
                404,
            ),
            (
                Main,
                "GET",
                "/go/api/pipelines/foo/instance/0".into(),
                Viewer,
                accept,
                &none,
                404,
            ),
            (
                Main,
                "GET",
                "/go/api/pipelines/foo/history/x".into(),
                Viewer,
                accept,
                &none,
                400,
            ),
            (
                Main,
                "GET",
                format!("{pipeline_history}?page_size=101"),
                Viewer,
                accept,
                &none,
                400,
            ),
        ]);
    }
    calls.extend([
        (
            Main,
            "GET",
            pipeline_history.clone(),
            Viewer,
            v1,
            &none,
            200,
        ),
        (
            Main,
            "GET",
            format!("{pipeline_history}?page_size=10&before=1"),
            Viewer,
            latest,
            &none,
            200,
        ),
        (
            Main,
            "GET",
            format!("{pipeline_history}?after=1.5"),
            Viewer,
            v1,
            &none,
            400,
        ),
        (
            Main,
            "GET",
            pipeline_history.clone(),
            Anonymous,
            v1,
            &none,
            401,
        ),
        (
            Main,
            "GET",
            pipeline_history.clone(),
            Nobody,
            v1,
            &none,
            403,
        ),
        (
            Main,
            "GET",
            "/go/api/pipelines/nope/history".into(),
            Viewer,
            v1,
            &none,
            404,
        ),
        (
            Main,
            "GET",
            pipeline_history.clone(),
            Viewer,
            v3,
            &none,
            404,
        ),
        (
            Down,
            "GET",
            pipeline_history.clone(),
            Operator,
            v1,
            &none,
            503,
        ),
    ]);
    let stage_v3 = "/go/api/stages/foo/1/DEV/1".to_string();
    let pipeline_v1 = "/go/api/pipelines/foo/1".to_string();
    for (read, current, unknown) in [
        (&stage_v3, v3, "/go/api/stages/foo/9/DEV/1"),
        (&pipeline_v1, v1, "/go/api/pipelines/foo/9"),
    ] {
        calls.extend([
            (Main, "GET", read.clone(), Viewer, current, &none, 200),
            (Main, "GET", read.clone(), Viewer, latest, &none, 200),
            (Main, "GET", read.clone(), Viewer, current, &broken, 400),
            (Main, "GET", read.clone(), Anonymous, current, &none, 401),
            (Main, "GET", read.clone(), Anonymous, &[], &none, 401),
            (Main, "GET", read.clone(), Nobody, current, &none, 403),
            (Main, "GET", unknown.into(), Viewer, current, &none, 404),
            (Main, "GET", read.clone(), Viewer, &[], &none, 404),
            (Main, "GET", read.clone(), Viewer, json_accept, &none, 404),
            (Main, "POST", read.clone(), Viewer, current, &none, 405),
            (Main, "GET", read.clone(), Viewer, current, &big, 413),
            (Down, "GET", read.clone(), Operator, current, &none, 503),
            (Down, "GET", read.clone(), Operator, &[], &none, 503),
        ]);
    }
    calls.extend([
        (
            Main,
            "GET",
            "/go/api/stages/foo/x/DEV/1".into(),
            Viewer,
            v3,
            &none,
            404,
        ),
        (
            Main,
            "GET",
            "/go/api/pipelines/foo/0".into(),
            Viewer,
            v1,
            &none,
            422,
        ),
        (
            Main,
            "GET",
            "/go/api/pipelines/foo/99999999999999999999".into(),
            Viewer,
            v1,
            &none,
            422,
        ),
    ]);
    let version = "/go/api/version".to_string();
    let about = "/go/about".to_string();
    // The HTTP layer's answers, on every GoCD operation: a body that does not
    // arrive in time (408), too many header fields (431).
    let stalled = Body::Stalled;
    let crowded = Body::Crowded;
    for (method, path, headers) in [
        ("POST", "/go/api/stages/foo/DEV/cancel".to_string(), &[][..]),
        ("POST", instance.clone(), current),
        ("GET", stage_history.clone(), &[]),
        ("GET", "/go/api/stages/foo/DEV/history/0".into(), &[]),
        ("GET", legacy_stage.clone(), &[]),
        ("GET", stage_v3.clone(), v3),
        ("GET", pipeline_history.clone(), &[]),
        ("GET", pipeline_history_at.clone(), &[]),
        ("GET", legacy_pipeline.clone(), &[]),
        ("GET", pipeline_v1.clone(), v1),
        ("GET", version.clone(), v1),
        ("GET", about.clone(), &[]),
    ] {
        calls.extend([
            (Slow, method, path.clone(), Admin, headers, &stalled, 408),
            (Main, method, path, Admin, headers, &crowded, 431),
        ]);
    }
    calls.extend([
        (Main, "GET", version.clone(), Nobody, v1, &none, 200),
        (Main, "GET", version.clone(), Viewer, latest, &none, 200),
        (Main, "GET", version.clone(), Viewer, v1, &broken, 400),
        (Main, "GET", version.clone(), Anonymous, v1, &none, 401),
        (Main, "GET", version.clone(), Viewer, &[], &none, 404),
        (Main, "GET", version.clone(), Viewer, v3, &none, 404),
        (Main, "POST", version.clone(), Viewer, v1, &none, 405),
        (Main, "GET", version.clone(), Viewer, v1, &big, 413),
        (Down, "GET", version.clone(), Operator, v1, &none, 503),
        (Main, "GET", about.clone(), Nobody, &[], &none, 200),
        (Main, "GET", about.clone(), Viewer, &[], &broken, 400),
        (Main, "GET", about.clone(), Anonymous, &[], &none, 401),
        (
            Main,
            "GET",
            about.clone(),
            Anonymous,
            json_accept,
            &none,
            401,
        ),
        (Main, "POST", about.clone(), Viewer, &[], &none, 405),
        (Main, "GET", about.clone(), Viewer, &[], &big, 413),
        (Down, "GET", about.clone(), Operator, &[], &none, 503),
    ]);
    let ca_bad = json_body(json!({"job_id": JOB, "build_no": 19}));
    let ca_unknown = json_body(json!({"job_id": "nope", "build_no": "1"}));
    let stop = "/v3/jobs/stop".to_string();
    let stop_path = format!("/v3/jobs/{JOB}/19/stop");
    calls.extend([
        (Main, "POST", stop.clone(), Operator, &[][..], &ca_ok, 200),
        (Main, "POST", stop.clone(), Operator, &[], &ca_bad, 400),
        (Main, "POST", stop.clone(), Anonymous, &[], &ca_ok, 401),
        (Main, "POST", stop.clone(), Viewer, &[], &ca_ok, 403),
        (Main, "POST", stop.clone(), Operator, &[], &ca_unknown, 404),
        (Main, "GET", stop.clone(), Operator, &[], &none, 405),
        (Main, "POST", stop.clone(), Operator, &[], &big, 413),
        (Main, "POST", stop.clone(), Operator, &[], &broken, 400),
        (Down, "POST", stop.clone(), Operator, &[], &ca_ok, 500),
        (Main, "POST", stop_path.clone(), Operator, &[], &none, 200),
        (
            Main,
            "POST",
            format!("/v3/jobs/{JOB}/x/stop"),
            Operator,
            &[],
            &none,
            400,
        ),
        (Main, "POST", stop_path.clone(), Anonymous, &[], &none, 401),
        (Main, "POST", stop_path.clone(), Viewer, &[], &none, 403),
        (
            Main,
            "POST",
            "/v3/jobs/nope/1/stop".into(),
            Operator,
            &[],
            &none,
            404,
        ),
        (Main, "GET", stop_path.clone(), Operator, &[], &none, 405),
        (Main, "POST", stop_path.clone(), Operator, &[], &big, 413),
        (Main, "POST", stop_path.clone(), Operator, &[], &broken, 400),
        (Down, "POST", stop_path.clone(), Operator, &[], &none, 500),
    ]);
    let status = format!("/v3/jobs/{JOB}/status");
    let history = format!("/v3/jobs/{JOB}/history");
    let details = format!("/v3/jobs/{JOB}/19/history-details");
    for read in [&status, &history, &details] {
        let unknown = read.replace(JOB, "nope");
        calls.extend([
            (Main, "GET", read.clone(), Viewer, &[][..], &none, 200),
            (Main, "GET", read.clone(), Viewer, &[], &broken, 400),
            (Main, "GET", read.clone(), Anonymous, &[], &none, 401),
            (Main, "GET", read.clone(), Nobody, &[], &none, 403),
            (Main, "GET", unknown, Viewer, &[], &none, 404),
            (Main, "POST", read.clone(), Viewer, &[], &none, 405),
            (Main, "GET", read.clone(), Viewer, &[], &big, 413),
            (Down, "GET", read.clone(), Operator, &[], &none, 500),
        ]);
    }
    calls.extend([
        (
            Main,
            "GET",
            format!("{history}?offset=0&limit=101&interval=30"),
            Viewer,
            &[][..],
            &none,
            400,
        ),
        (
            Main,
            "GET",
            format!("/v3/jobs/{JOB}/0/history-details"),
            Viewer,
            &[],
            &none,
            400,
        ),
        (
            Main,
            "GET",
            format!("/v3/jobs/{JOB}/18/history-details"),
            Viewer,
            &[],
            &none,
            404,
        ),
    ]);
    let crafter = "/api/1/services/api/1/publish/cancel-publish-requests.json".to_string();
    let crafter_bad = json_body(json!({"site_id": "foo", "package_ids": []}));
    let crafter_unknown = json_body(json!({"site_id": "nope", "package_ids": ["x"]}));
    calls.extend([
        (
            Main,
            "POST",
            crafter.clone(),
            Operator,
            &[][..],
            &crafter_ok,
            200,
        ),
        (
            Main,
            "POST",
            crafter.clone(),
            Operator,
            &[],
            &crafter_bad,
            400,
        ),
        (
            Main,
            "POST",
            crafter.clone(),
            Anonymous,
            &[],
            &crafter_ok,
            401,
        ),
        (
            Main,
            "POST",
            crafter.clone(),
            Operator,
            &[],
            &crafter_unknown,
            404,
        ),
        (Main, "GET", crafter.clone(), Operator, &[], &none, 405),
        (Main, "POST", crafter.clone(), Operator, &[], &big, 413),
        (Main, "POST", crafter.clone(), Operator, &[], &broken, 400),
        (
            Down,
            "POST",
            crafter.clone(),
            Operator,
            &[],
            &crafter_ok,
            500,
        ),
    ]);
    let studio_cancel = "/studio/api/2/publish/cancel".to_string();
    let studio_ok = json_body(json!({"siteId": "foo", "packageIds": [uid["foo-1-dev"]]}));
    let studio_bad = json_body(json!({"siteId": "foo", "packageIds": ["x"]}));
    let studio_unknown_site = json_body(json!({"siteId": "nope", "packageIds": []}));
    let studio_unknown_package =
        json_body(json!({"siteId": "foo", "packageIds": ["00000000-0000-0000-0000-000000000000"]}));
    let queue = "/studio/api/2/publish/packages?siteId=foo".to_string();
    calls.extend([
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[][..],
            &studio_ok,
            200,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &studio_bad,
            400,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &broken,
            400,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Anonymous,
            &[],
            &studio_ok,
            401,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Viewer,
            &[],
            &studio_ok,
            403,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &studio_unknown_site,
            404,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &studio_unknown_package,
            404,
        ),
        (
            Main,
            "GET",
            studio_cancel.clone(),
            Operator,
            &[],
            &none,
            405,
        ),
        (
            Main,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &big,
            413,
        ),
        (
            Down,
            "POST",
            studio_cancel.clone(),
            Operator,
            &[],
            &studio_ok,
            500,
        ),
        (Main, "GET", queue.clone(), Viewer, &[], &none, 200),
        (
            Main,
            "GET",
            format!("{queue}&offset=1&limit=1&states=COMPLETED,READY_FOR_LIVE&environment=dev"),
            Viewer,
            &[],
            &none,
            200,
        ),
        (
            Main,
            "GET",
            format!("{queue}&offset=-1"),
            Viewer,
            &[],
            &none,
            400,
        ),
        (Main, "GET", queue.clone(), Viewer, &[], &broken, 400),
        (Main, "GET", queue.clone(), Anonymous, &[], &none, 401),
        (Main, "GET", queue.clone(), Nobody, &[], &none, 403),
        (
            Main,
            "GET",
            queue.replace("foo", "nope"),
            Viewer,
            &[],
            &none,
            404,
        ),
        (Main, "POST", queue.clone(), Viewer, &[], &none, 405),
        (Main, "GET", queue.clone(), Viewer, &[], &big, 413),
        (Down, "GET", queue.clone(), Operator, &[], &none, 500),
    ]);
    calls.extend([
        (
            Main,
            "POST",
            cf_cancel.clone(),
            Operator,
            &[][..],
            &broken,
            400,
        ),
        (Main, "POST", cf_cancel.clone(), Anonymous, &[], &none, 401),
        (Main, "POST", cf_cancel.clone(), Viewer, &[], &none, 403),
        (
            Main,
            "POST",
            format!("{unknown_task}/actions/cancel"),
            Operator,
            &[],
            &none,
            404,
        ),
        (Main, "GET", cf_cancel.clone(), Operator, &[], &none, 405),
        (Main, "POST", cf_cancel.clone(), Operator, &[], &big, 413),
        (Main, "POST", cf_cancel.clone(), Operator, &[], &none, 422),
        (Down, "POST", cf_cancel.clone(), Operator, &[], &none, 503),
        (Main, "GET", cf_get.clone(), Operator, &[], &none, 200),
        (Main, "GET", cf_get.clone(), Operator, &[], &broken, 400),
        (Main, "GET", cf_get.clone(), Anonymous, &[], &none, 401),
        (Main, "GET", unknown_task.clone(), Operator, &[], &none, 404),
        (Main, "DELETE", cf_get.clone(), Operator, &[], &none, 405),
        (Main, "GET", cf_get.clone(), Operator, &[], &big, 413),
        (Down, "GET", cf_get.clone(), Operator, &[], &none, 503),
    ]);
    let cf_put = format!("/v3/tasks/{done}/cancel");
    let tasks = "/v3/tasks".to_string();
    let app_tasks = "/v3/apps/foo/tasks".to_string();
    calls.extend([
        (Main, "PUT", cf_put.clone(), Operator, &[][..], &broken, 400),
        (Main, "PUT", cf_put.clone(), Anonymous, &[], &none, 401),
        (Main, "PUT", cf_put.clone(), Viewer, &[], &none, 403),
        (
            Main,
            "PUT",
            format!("{unknown_task}/cancel"),
            Operator,
            &[],
            &none,
            404,
        ),
        (Main, "POST", cf_put.clone(), Operator, &[], &none, 405),
        (Main, "PUT", cf_put.clone(), Operator, &[], &big, 413),
        (Main, "PUT", cf_put.clone(), Operator, &[], &none, 422),
        (Down, "PUT", cf_put.clone(), Operator, &[], &none, 503),
    ]);
    for list in [&tasks, &app_tasks] {
        calls.extend([
            (Main, "GET", list.clone(), Viewer, &[][..], &none, 200),
            (
                Main,
                "GET",
                format!("{list}?states=RUNNING,FAILED&label_selector=a%20in%20(b)&order_by=-updated_at&per_page=1&page=2"),
                Viewer,
                &[],
                &none,
                200,
            ),
            (
                Main,
                "GET",
                format!("{list}?per_page=5001"),
                Viewer,
                &[],
                &none,
                400,
            ),
            (Main, "GET", format!("{list}?x=1"), Viewer, &[], &none, 400),
            (Main, "GET", list.clone(), Viewer, &[], &broken, 400),
            (Main, "GET", list.clone(), Anonymous, &[], &none, 401),
            (Main, "POST", list.clone(), Viewer, &[], &none, 405),
            (Main, "GET", list.clone(), Viewer, &[], &big, 413),
            (Down, "GET", list.clone(), Viewer, &[], &none, 503),
        ]);
    }
    calls.push((
        Main,
        "GET",
        "/v3/apps/nope/tasks".into(),
        Viewer,
        &[],
        &none,
        404,
    ));
    for root in ["/", "/v3"] {
        calls.extend([
            (
                Main,
                "GET",
                root.to_string(),
                Anonymous,
                &[][..],
                &none,
                200,
            ),
            (Down, "GET", root.to_string(), Anonymous, &[], &none, 200),
            (Main, "GET", root.to_string(), Anonymous, &[], &broken, 400),
            (Main, "POST", root.to_string(), Anonymous, &[], &none, 405),
            (Main, "GET", root.to_string(), Anonymous, &[], &big, 413),
        ]);
    }
    let form: &[(&str, &str)] = &[("Content-Type", "application/x-www-form-urlencoded")];
    let refresh = |token: &str| {
        Body::Bytes(format!("grant_type=refresh_token&scope=&refresh_token={token}").into_bytes())
    };
    let good_refresh = refresh(&support::token(User::Viewer));
    let bad_refresh = refresh("not-a-token-anyone-issued");
    let password = Body::Bytes(b"grant_type=password&username=admin&password=badger".to_vec());
    let oauth = "/oauth/token".to_string();
    calls.extend([
        (
            Main,
            "POST",
            oauth.clone(),
            Anonymous,
            form,
            &good_refresh,
            200,
        ),
        (Main, "POST", oauth.clone(), Anonymous, form, &password, 400),
        (Main, "POST", oauth.clone(), Anonymous, form, &broken, 400),
        (
            Main,
            "POST",
            oauth.clone(),
            Anonymous,
            form,
            &bad_refresh,
            401,
        ),
        (Main, "GET", oauth.clone(), Anonymous, &[], &none, 405),
        (Main, "POST", oauth.clone(), Anonymous, form, &big, 413),
        (
            Down,
            "POST",
            oauth.clone(),
            Anonymous,
            form,
            &good_refresh,
            503,
        ),
    ]);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        calls.extend([
            (
                Main,
                "GET",
                path.to_string(),
                Anonymous,
                &[][..],
                &none,
                200,
            ),
            (Main, "GET", path.to_string(), Anonymous, &[], &broken, 400),
            (Main, "POST", path.to_string(), Anonymous, &[], &none, 405),
            (Main, "GET", path.to_string(), Anonymous, &[], &big, 413),
        ]);
    }
    calls.push((Down, "GET", "/readyz".into(), Anonymous, &[], &none, 503));
    // The HTTP layer's answers on every other operation, from the call that
    // gets its 413: a body that does not arrive in time (408), too many
    // header fields (431).
    let layer: Vec<_> = calls
        .iter()
        .filter(|c| c.6 == 413 && !c.2.starts_with("/go/"))
        .flat_map(|c| {
            [
                (Slow, c.1, c.2.clone(), c.3, c.4, &stalled, 408),
                (Main, c.1, c.2.clone(), c.3, c.4, &crowded, 431),
            ]
        })
        .collect();
    calls.extend(layer);
    // Last, as they cancel: 202 from an active task, through either route.
    calls.push((
        Main,
        "PUT",
        format!("/v3/tasks/{}/cancel", uid["foo-3-uattest"]),
        Operator,
        &[],
        &none,
        202,
    ));
    calls.push((
        Main,
        "POST",
        format!("/v3/tasks/{active}/actions/cancel"),
        Operator,
        &[],
        &none,
        202,
    ));

    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut failures = Vec::new();
    for (server, method, path, caller, headers, body, want) in &calls {
        let what = format!("{method} {path} as {caller:?} on {server:?} {headers:?} with {body:?}");
        let r = w.send(*server, method, path, *caller, headers, body).await;
        if r.status != *want {
            failures.push(format!("{what}: want {want}, got {} {}", r.status, r.body));
            continue;
        }
        let template = template_of(&doc, path).expect("a documented path");
        let item = &doc["paths"][template];
        // A 405 is documented on the path's operation.
        let (op_method, op) = match item.get(method.to_ascii_lowercase()) {
            Some(op) => (method.to_ascii_lowercase(), op),
            None => {
                let (m, op) = item
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| *k != "parameters")
                    .unwrap();
                (m.clone(), op)
            }
        };
        let op_id = op["operationId"].as_str().unwrap().to_string();
        let Some(resp) = op["responses"].get(want.to_string()) else {
            failures.push(format!("{what}: {want} is not documented for {op_id}"));
            continue;
        };
        // An answer of the HTTP layer has no body, and none is documented.
        if resp.get("content").is_none() {
            if r.body.is_empty() {
                covered.insert((op_id, want.to_string()));
            } else {
                failures.push(format!(
                    "{what}: a body where none is documented: {}",
                    r.body
                ));
            }
            continue;
        }
        let media = r.content_type.split(';').next().unwrap_or("").trim();
        let Some(schema) = resp["content"].get(media).map(|m| &m["schema"]) else {
            failures.push(format!(
                "{what}: content-type {media:?} is not documented for {op_id} {want}"
            ));
            continue;
        };
        let instance = if media == "application/json" || media.ends_with("+json") {
            match serde_json::from_str(&r.body) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{what}: not JSON ({e}): {}", r.body));
                    continue;
                }
            }
        } else {
            Value::String(r.body.clone())
        };
        let errs = errors(&validator(&doc, schema), &instance);
        if !errs.is_empty() {
            failures.push(format!("{what} ({op_method} {template}): {errs:?}"));
        }
        covered.insert((op_id, want.to_string()));
    }
    for (_, _, op) in &ops {
        let id = op["operationId"].as_str().unwrap();
        for code in op["responses"].as_object().unwrap().keys() {
            if !covered.contains(&(id.to_string(), code.clone())) {
                failures.push(format!("{id} {code}: documented but never produced"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
