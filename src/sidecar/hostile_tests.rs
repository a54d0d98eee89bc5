//! Hostile input through the whole request pipeline (route, query,
//! credentials, body): generated requests and the kept corpus in
//! `tests/corpus/requests/` must never panic, and every error must be in the
//! format of the API the path belongs to. No Kubernetes API answers here
//! (the client points at a closed port), so calls that need one get the
//! API's "unavailable" error.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::auth::{self, AuthMode};
use super::routes::{self, Family};
use super::server::{errors_for, handle};
use super::service::Service;
use super::{Config, Limits, aksk, start};

/// bcrypt of "badger" at the smallest cost, so that Basic checks stay fast.
const USERS: &str = r#"
users:
- name: admin
  passwordHash: "$2b$04$TyR2ATBPPSfNmR/Xnh4dKuxxJ7bbh8J4/jr6CCsBVcvmhqIzHrb/."
  username: admin
accessKeys:
- accessKey: HSTIKTESTKEY
  secretKey: not-so-secret-test-key
  username: admin
"#;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// A sidecar state per authentication mode, sharing one runtime.
fn states() -> &'static [Arc<Service>; 2] {
    static STATES: OnceLock<[Arc<Service>; 2]> = OnceLock::new();
    STATES.get_or_init(|| {
        runtime().block_on(async {
            let users = std::env::temp_dir()
                .join(format!("cancel-hostile-users-{}.yaml", std::process::id()));
            std::fs::write(&users, USERS).expect("users file");
            let limits = Limits {
                body_read_timeout: std::time::Duration::from_secs(5),
                ..Limits::default()
            };
            let states = [
                new_state(AuthMode::None, Some(&users), limits.clone()),
                new_state(AuthMode::Kubernetes, Some(&users), limits),
            ];
            let _ = std::fs::remove_file(&users);
            states
        })
    })
}

/// A sidecar state whose Kubernetes client points at port 1 on loopback:
/// refused, so every Kubernetes call fails at once. Needs the runtime.
fn new_state(auth: AuthMode, users: Option<&std::path::Path>, limits: Limits) -> Arc<Service> {
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    start(
        client,
        &Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            namespaces: vec!["ns".into()],
            auth,
            users_file: users.map(std::path::Path::to_path_buf),
            external_url: None,
            auth_cache_ttl: std::time::Duration::from_secs(1),
            users_file_poll: std::time::Duration::from_secs(60),
            signing: auth::SigningConfig::default(),
            archive_url: None,
            archive_pool_size: 1,
            limits,
        },
    )
    .expect("state")
}

/// One request as the server layer hands it over.
#[derive(Clone, Debug)]
struct Request {
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    content_type: String,
    body: Bytes,
}

fn send(auth: usize, req: &Request) -> Answer {
    send_to(states()[auth].clone(), req)
}

fn send_to(state: Arc<Service>, req: &Request) -> Answer {
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        // hyper refuses what does not parse before any handler runs.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    let body = futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from(req.body.clone()))]);
    let response = runtime()
        .block_on(handle(
            state,
            req.method.clone(),
            req.path.clone(),
            req.query.clone(),
            headers,
            body,
        ))
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = runtime()
        .block_on(http_body_util::BodyExt::collect(response.into_body()))
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Answer {
        status,
        retry_after,
        content_type,
        body,
    }
}

/// Panics unless `answer` is one the API of `req.path` can give, in its format.
fn check(req: &Request, answer: &Answer) {
    let family = routes::family_of(&req.path);
    let mut headers = HeaderMap::new();
    if let Some((_, accept)) = req.headers.iter().find(|(n, _)| n == "accept")
        && let Ok(v) = HeaderValue::from_bytes(accept)
    {
        headers.insert(header::ACCEPT, v);
    }
    let status = answer.status;
    let what = || {
        format!(
            "{req:?} → {status} {}",
            String::from_utf8_lossy(&answer.body)
        )
    };
    if status.is_server_error() {
        let unavailable = errors_for(family, &headers).unavailable("probe").status();
        assert_eq!(status, unavailable, "an undocumented 5xx: {}", what());
    }
    if !status.is_client_error() && !status.is_server_error() {
        return;
    }
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| j.get(name)).cloned();
    let ok = match family {
        Family::GoCd => {
            answer.content_type.starts_with("text/")
                || field("message").is_some_and(|m| m.is_string())
        }
        Family::CodeArts => {
            field("error_code").is_some_and(|c| c.as_str().is_some_and(|c| c.starts_with("CB.")))
                && field("error_msg").is_some_and(|m| m.is_string())
        }
        Family::Crafter => field("message").is_some_and(|m| m.is_string()),
        Family::StudioV2 => field("response").is_some_and(|r| r.get("code").is_some()),
        Family::CloudFoundry => field("errors").is_some_and(|e| {
            e.as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.iter().all(|e| {
                        e.get("code").is_some_and(Value::is_u64)
                            && e.get("title").is_some_and(Value::is_string)
                            && e.get("detail").is_some_and(Value::is_string)
                    })
            })
        }),
        Family::Uaa => field("error").is_some_and(|e| e.is_string()),
        Family::Operations => answer.content_type.starts_with("text/plain"),
    };
    assert!(ok, "not in the {family:?} error format: {}", what());
}

/// Paths of every API, with their parameters left to fill.
const TEMPLATES: &[&str] = &[
    "/go/api/stages/{}/{}/cancel",
    "/go/api/stages/{}/{}/{}/{}/cancel",
    "/go/api/stages/{}/{}/history/{}",
    "/go/api/stages/{}/{}/history",
    "/go/api/stages/{}/{}/{}/{}",
    "/go/api/stages/{}/{}/{}/{}/run",
    "/go/api/pipelines/{}/history",
    "/go/api/pipelines/{}/{}",
    "/go/api/version",
    "/go/about",
    "/v3/jobs/stop",
    "/v3/jobs/{}/{}/stop",
    "/v3/jobs/{}/{}/record-info",
    "/v3/jobs/{}/status",
    "/api/1/services/api/1/publish/cancel-publish-requests.json",
    "/api/1/services/api/1/publish/{}",
    "/studio/api/2/publish/cancel",
    "/studio/api/2/publish/package",
    "/studio/api/2/publish/packages",
    "/studio/api/2/{}",
    "/v3/tasks/{}/actions/cancel",
    "/v3/tasks/{}/cancel",
    "/v3/tasks/{}",
    "/v3/tasks",
    "/v3/apps/{}/tasks",
    "/v3",
    "/",
    "/oauth/token",
    "/login",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/{}",
];

fn fill(template: &str, params: &[String]) -> String {
    let mut out = String::new();
    let mut params = params.iter();
    let mut rest = template;
    while let Some(at) = rest.find("{}") {
        out.push_str(&rest[..at]);
        out.push_str(params.next().map(String::as_str).unwrap_or("x"));
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

/// Path segments: plausible names, numbers, encodings, traversal, junk.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,12}",
        "-?[0-9]{1,22}",
        Just(String::new()),
        Just("..".to_string()),
        Just("%2e%2e%2f".to_string()),
        Just("%00".to_string()),
        Just("%FF%FE".to_string()),
        Just("%".to_string()),
        Just("a%2Fb".to_string()),
        Just("f9d6c8466d614a9788e9a0acf6c15f46".to_string()),
        Just("00000000-0000-0000-0000-000000000000".to_string()),
        "[%/?#;=&a-f0-9 ]{0,16}",
        "\\PC{0,8}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,10}=[a-zA-Z0-9%+&=.,:-]{0,20}",
        "(page|per_page|offset|order_by|states|guids|names|label_selector|created_ats|site|site_id|limit|build_no|job_id)=[-0-9a-z,%<>=!]{0,16}",
        "[&=%?;a-z0-9]{0,40}",
        "\\PC{0,20}",
    ]
}

fn token_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn credentials() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    use base64::Engine;
    let b64 = |s: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(s);
    prop_oneof![
        Just(vec![]),
        token_bytes().prop_map(|t| vec![("authorization".into(), t)]),
        token_bytes()
            .prop_map(|t| vec![("authorization".into(), [b"Bearer ".as_slice(), &t].concat())]),
        token_bytes().prop_map(|t| vec![("x-auth-token".into(), t)]),
        token_bytes().prop_map(move |t| vec![(
            "authorization".into(),
            format!("Basic {}", b64(t)).into_bytes()
        )]),
        Just(vec![(
            "authorization".into(),
            b"Basic YWRtaW46YmFkZ2Vy".to_vec()
        )]),
        (
            token_bytes(),
            token_bytes(),
            "[a-z;-]{0,30}",
            "[0-9]{0,8}T[0-9]{0,6}Z?"
        )
            .prop_map(|(access, signature, signed, date)| {
                let mut auth = b"SDK-HMAC-SHA256 Access=".to_vec();
                auth.extend(access);
                auth.extend(format!(", SignedHeaders={signed}, Signature=").bytes());
                auth.extend(signature);
                vec![
                    ("authorization".into(), auth),
                    ("x-sdk-date".into(), date.into_bytes()),
                    ("host".into(), b"example.test".to_vec()),
                ]
            }),
        "[ -~]{0,60}".prop_map(|p| vec![(
            "authorization".into(),
            format!("SDK-HMAC-SHA256 {p}").into_bytes()
        )]),
        "[ -~]{0,30}".prop_map(|p| vec![(
            "authorization".into(),
            format!("SDK-HMAC-SHA1 {p}").into_bytes()
        )]),
    ]
}

/// JSON shaped like each API's bodies, with hostile values.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "[0-9-]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("job_id".to_string()),
                    Just("build_no".to_string()),
                    Just("site_id".to_string()),
                    Just("package_ids".to_string()),
                    Just("siteId".to_string()),
                    Just("packageIds".to_string()),
                    Just("comment".to_string()),
                    Just("grant_type".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..200),
        "[{}\\[\\]\":,0-9a-z ]{0,80}".prop_map(String::into_bytes),
        "(grant_type|username|password|client_id|refresh_token)=[a-z%&=+]{0,20}"
            .prop_map(String::into_bytes),
    ]
}

fn other_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("accept".to_string()),
                Just("content-type".to_string()),
                Just("x-gocd-confirm".to_string()),
                Just("confirm".to_string()),
                Just("host".to_string()),
                Just("x-forwarded-proto".to_string()),
                Just("x-vcap-request-id".to_string()),
                Just("content-length".to_string()),
                "[a-z-]{1,12}",
            ],
            prop_oneof![
                Just(b"application/json".to_vec()),
                Just(b"application/vnd.go.cd.v3+json".to_vec()),
                Just(b"application/vnd.go.cd+json".to_vec()),
                Just(b"application/x-www-form-urlencoded".to_vec()),
                Just(b"true".to_vec()),
                token_bytes(),
            ],
        ),
        0..4,
    )
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            // Mostly the methods the routes take, so that bodies get parsed.
            4 => Just(Method::GET),
            8 => Just(Method::POST),
            2 => Just(Method::PUT),
            1 => Just(Method::DELETE),
            1 => Just(Method::PATCH),
            1 => Just(Method::HEAD),
            1 => Just(Method::OPTIONS),
            1 => "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
        ],
        proptest::sample::select(TEMPLATES),
        proptest::collection::vec(segment(), 4),
        query(),
        credentials(),
        other_headers(),
        body(),
    )
        .prop_map(
            |(method, template, params, query, mut headers, other, body)| {
                headers.extend(other);
                Request {
                    method,
                    path: fill(template, &params),
                    query,
                    headers,
                    body,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_requests_get_answers_in_their_api_format(req in request(), auth in 0usize..2) {
        check(&req, &send(auth, &req));
    }

    #[test]
    fn the_router_takes_any_path(method in "[A-Z]{1,8}", path in "/\\PC{0,60}") {
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let family = routes::family_of(&path);
        match routes::route(&method, &path) {
            Ok(route) => prop_assert!(!route.name().is_empty()),
            Err(routes::NoRoute::NotFound(f)) | Err(routes::NoRoute::MethodNotAllowed { family: f, .. }) => {
                prop_assert_eq!(f, family)
            }
        }
    }

    #[test]
    fn credential_headers_of_any_shape_parse(headers in credentials()) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                map.append(n, v);
            }
        }
        let _ = auth::credentials(&map);
    }

    #[test]
    fn signing_parameters_of_any_shape_parse(params in "\\PC{0,80}", path in "/\\PC{0,30}", query in "\\PC{0,30}", date in "\\PC{0,20}") {
        if let Ok(a) = aksk::parse_authorization(&params) {
            prop_assert!(!a.signed_headers.is_empty());
        }
        let _ = aksk::canonical_uri(&path);
        let _ = aksk::canonical_query(&query);
        let _ = aksk::parse_sdk_date(&date);
    }
}

/// Reads a kept request: `METHOD target`, header lines, a blank line, then
/// the body (bytes as they are).
fn parse_corpus_file(bytes: &[u8]) -> Request {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2))
        .unwrap_or((bytes.len(), bytes.len()));
    let head = String::from_utf8_lossy(&bytes[..split.0]);
    let body = bytes[split.1..].to_vec();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    Request {
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    }
}

#[test]
fn the_kept_corpus_gets_answers_in_its_api_format() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus lost files: {}", files.len());
    for file in files {
        let req = parse_corpus_file(&std::fs::read(&file).expect("a corpus file"));
        for auth in 0..2 {
            let answer = send(auth, &req);
            check(&req, &answer);
            // A file may name the status it expects: `expect-NNN-…`.
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some(code) = name
                .strip_prefix("expect-")
                .and_then(|n| n.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
            {
                assert_eq!(answer.status.as_u16(), code, "{name} (auth mode {auth})");
            }
        }
    }
}

#[test]
fn a_body_over_the_limit_gets_413_in_the_api_format() {
    let req = Request {
        method: Method::POST,
        path: "/v3/jobs/stop".into(),
        query: String::new(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: vec![b' '; Limits::default().body_limit + 1],
    };
    for auth in 0..2 {
        let answer = send(auth, &req);
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        check(&req, &answer);
    }
}

#[test]
fn requests_over_the_in_flight_limit_get_the_apis_unavailable_error() {
    let state = runtime().block_on(async {
        new_state(
            AuthMode::None,
            None,
            Limits {
                max_in_flight: 2,
                ..Limits::default()
            },
        )
    });
    let get = |path: &str| Request {
        method: Method::GET,
        path: path.into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    };
    // Two requests being handled: every API sheds the next one.
    let held = state
        .in_flight
        .clone()
        .try_acquire_many_owned(2)
        .expect("permits");
    let shed = [
        ("/v3/tasks", StatusCode::SERVICE_UNAVAILABLE),
        (
            "/go/api/stages/foo/DEV/history",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        ("/v3/jobs/x/status", StatusCode::INTERNAL_SERVER_ERROR),
        (
            "/studio/api/2/publish/packages",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (path, status) in shed {
        let req = get(path);
        let answer = send_to(state.clone(), &req);
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.retry_after.as_deref(), Some("1"), "{path}");
        check(&req, &answer);
    }
    // Health and metrics are not counted.
    assert_eq!(
        send_to(state.clone(), &get("/healthz")).status,
        StatusCode::OK
    );
    assert_eq!(
        send_to(state.clone(), &get("/metrics")).status,
        StatusCode::OK
    );
    // Once they finish, requests are handled again.
    drop(held);
    let answer = send_to(state, &get("/v3/tasks"));
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.retry_after, None);
}
