//! The REST sidecar against the real control plane: every API of the sidecar's contract,
//! the API documents' curl examples run verbatim, idempotency, bad input, and an
//! authorisation matrix. Each test has a namespace, a controller and a
//! sidecar of its own; the sidecar authorises with real SubjectAccessReviews.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cancel_operator::crd::{CancelMode, CancelRequest, JobState, RunResult, StagePhase, StageRun};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use support::world::{self, PASSWORD, UsersFile};
use support::{TestNamespace, User, eventually, eventually_json, stage_run, wait_for};

const T: Duration = Duration::from_secs(90);

/// The documented CodeArts build task id.
const DOCUMENTED_JOB: &str = "f9d6c8466d614a9788e9a0acf6c15f46";

/// The documented history example for foo/DEV.
const DOCUMENTED_HISTORY: &str = r#"{
  "stages": [
    {
      "name": "DEV",
      "approved_by": "admin",
      "jobs": [
        {
          "name": "UnitTest",
          "result": "Failed",
          "state": "Completed",
          "id": 3,
          "scheduled_date": 1411456876262
        }
      ],
      "can_run": false,
      "pipeline_counter": 2,
      "pipeline_name": "foo",
      "approval_type": "success",
      "result": "Failed",
      "id": 3,
      "counter": "1",
      "operate_permission": false,
      "scheduled": true
    },
    {
      "name": "DEV",
      "approved_by": "changes",
      "jobs": [
        {
          "name": "UnitTest",
          "result": "Passed",
          "state": "Completed",
          "id": 1,
          "scheduled_date": 1411456676119
        }
      ],
      "can_run": false,
      "pipeline_counter": 1,
      "pipeline_name": "foo",
      "approval_type": "success",
      "result": "Passed",
      "id": 1,
      "counter": "1",
      "operate_permission": false,
      "scheduled": true
    }
  ],
  "pagination": {
    "offset": 0,
    "total": 2,
    "page_size": 10
  }
}"#;

// ---------------------------------------------------------------------------
// Harness: a namespace, the controller, RBAC, a users file and the sidecar.

/// One test's world. Dropping it stops the controller and the sidecar and
/// deletes the namespace.
struct Sidecar {
    ns: TestNamespace,
    base: String,
    http: reqwest::Client,
    users: UsersFile,
    _tasks: world::AbortOnDrop,
}

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    /// `Authorization: Bearer` with a token the API server does not know.
    BadToken,
    /// HTTP Basic `admin` with a wrong password.
    BadPassword,
    Bearer(User),
    /// `Authorization: bearer <t>`.
    LowercaseBearer(User),
    XAuthToken(User),
    /// HTTP Basic from the users file, password `badger`.
    Basic(&'static str),
}

/// An HTTP answer, read in full.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    what: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    fn json(&self) -> Value {
        let ct = self.content_type();
        assert!(
            ct.starts_with("application/json")
                || (ct.starts_with("application/vnd.") && ct.contains("+json")),
            "{}: content-type {:?}, body {}",
            self.what,
            self.content_type(),
            self.body
        );
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.body))
    }

    /// Asserts the status, showing the body when it differs.
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{}: unexpected status; body: {}",
            self.what, self.body
        );
        self
    }

    /// Asserts a plain-text body.
    fn text(&self, status: u16, body: &str) {
        self.expect(status);
        assert!(
            self.content_type().starts_with("text/plain"),
            "{}: content-type {:?}",
            self.what,
            self.content_type()
        );
        assert_eq!(self.body, body, "{}", self.what);
    }

    /// Asserts a JSON body.
    fn json_eq(&self, status: u16, body: Value) {
        self.expect(status);
        assert_eq!(self.json(), body, "{}", self.what);
    }

    /// Asserts a CodeArts error.
    fn codearts_error(&self, status: u16, code: &str) {
        self.expect(status);
        let v = self.json();
        assert_eq!(v["error_code"], code, "{}: {v}", self.what);
        assert!(
            v["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {v}",
            self.what
        );
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(2),
            "{}: {v}",
            self.what
        );
    }

    /// Asserts a CrafterCMS Studio v2 answer: the `response` envelope with
    /// `code`; returns the whole body.
    fn studio(&self, status: u16, code: u64) -> Value {
        self.expect(status);
        let v = self.json();
        let r = &v["response"];
        assert_eq!(r["code"], code, "{}: {v}", self.what);
        for field in ["message", "remedialAction", "documentationUrl"] {
            assert!(r[field].is_string(), "{}: {field} in {v}", self.what);
        }
        v
    }

    /// Asserts a Cloud Foundry error.
    fn cf_error(&self, status: u16, code: u64, title: &str, detail: Option<&str>) {
        self.expect(status);
        let v = self.json();
        let errors = v["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{}: {v}", self.what);
        assert_eq!(errors[0]["code"], code, "{}: {v}", self.what);
        assert_eq!(errors[0]["title"], title, "{}: {v}", self.what);
        match detail {
            Some(d) => assert_eq!(errors[0]["detail"], d, "{}: {v}", self.what),
            None => assert!(errors[0]["detail"].is_string(), "{}: {v}", self.what),
        }
    }
}

async fn setup(prefix: &str) -> Sidecar {
    let ns = TestNamespace::new(prefix).await;
    let users = UsersFile::new(&ns.name);
    let served = world::serve(ns, Some(&users.path)).await;
    Sidecar {
        ns: served.ns,
        base: format!("http://{}", served.addr),
        http: served.http,
        users,
        _tasks: served.tasks,
    }
}

impl Sidecar {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn runs(&self) -> Api<StageRun> {
        self.ns.api()
    }

    /// Sends a request; a 5xx answer fails the test wherever it happens.
    async fn send(
        &self,
        method: &str,
        path: &str,
        caller: Caller,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let what = format!("{method} {path} as {caller:?}");
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        req = match caller {
            Caller::Anonymous => req,
            Caller::BadToken => req.header("Authorization", "Bearer not-a-token-anyone-issued"),
            Caller::BadPassword => req.basic_auth("admin", Some("not-badger")),
            Caller::Bearer(u) => {
                req.header("Authorization", format!("Bearer {}", support::token(u)))
            }
            Caller::LowercaseBearer(u) => {
                req.header("Authorization", format!("bearer {}", support::token(u)))
            }
            Caller::XAuthToken(u) => req.header("X-Auth-Token", support::token(u)),
            Caller::Basic(user) => req.basic_auth(user, Some(PASSWORD)),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(status < 500, "{what} answered {status}: {body}");
        Reply {
            status,
            headers,
            body,
            what,
        }
    }

    async fn get(&self, path: &str, caller: Caller) -> Reply {
        self.send("GET", path, caller, &[], None).await
    }

    async fn post(&self, path: &str, caller: Caller) -> Reply {
        self.send("POST", path, caller, &[], None).await
    }

    async fn post_json(&self, path: &str, caller: Caller, body: &Value) -> Reply {
        self.post_raw(path, caller, body.to_string().as_bytes())
            .await
    }

    async fn post_raw(&self, path: &str, caller: Caller, body: &[u8]) -> Reply {
        self.send(
            "POST",
            path,
            caller,
            &[("Content-Type", "application/json")],
            Some(body.to_vec()),
        )
        .await
    }

    async fn create(&self, sr: StageRun) -> StageRun {
        self.runs()
            .create(&PostParams::default(), &sr)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", sr.name_any()))
    }

    async fn wait_phase(&self, name: &str, want: StagePhase) -> StageRun {
        wait_for(
            &self.runs(),
            name,
            &format!("{name} to be {want:?}"),
            T,
            |sr| phase(sr) == Some(want),
        )
        .await
    }

    /// Waits until the sidecar's cache shows the StageRun in `state` (its
    /// Cloud Foundry task state), so that endpoints answer from current data.
    async fn wait_cached(&self, sr: &StageRun, state: &str) {
        world::wait_cached(&self.http, &self.base, &sr.uid().unwrap(), state).await;
    }

    async fn cancel_requests(&self) -> Vec<CancelRequest> {
        self.ns
            .api::<CancelRequest>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn assert_no_cancel_request(&self, when: &str) {
        let found: Vec<String> = self
            .cancel_requests()
            .await
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert!(
            found.is_empty(),
            "{when}: CancelRequests written: {found:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Data.

fn running() -> Value {
    json!({"sim.cancel.dev/run-for": "1h"})
}

fn passing() -> Value {
    json!({"sim.cancel.dev/run-for": "1s"})
}

fn failing() -> Value {
    json!({"sim.cancel.dev/exit-code": "1"})
}

/// Runs until its grace period (30 s by default) ends after a cancel: it
/// stays Canceling long enough for repeated calls to see it so.
fn stubborn() -> Value {
    json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"})
}

fn phase(sr: &StageRun) -> Option<StagePhase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn result(sr: &StageRun) -> Option<RunResult> {
    sr.status.as_ref().and_then(|s| s.result)
}

fn uid(sr: &StageRun) -> String {
    sr.uid().unwrap()
}

/// The pipelines of the GoCD documents: demo_pipeline/first_stage (running),
/// foo/DEV counter 1 (passed, approved by `changes`) and counter 2 (failed,
/// approved by `admin`), foo/UATTest counter 2 (running).
struct Demo {
    first_stage: StageRun,
    foo_1_dev: StageRun,
    foo_2_dev: StageRun,
    foo_2_uat: StageRun,
}

async fn demo_data(s: &Sidecar) -> Demo {
    s.create(
        stage_run("demo-pipeline-1-first-stage")
            .of(("demo_pipeline", 1, "first_stage"))
            .job("first_job", running())
            .build(),
    )
    .await;
    s.create(
        stage_run("foo-1-dev")
            .of(("foo", 1, "DEV"))
            .approved_by("changes")
            .job("UnitTest", passing())
            .build(),
    )
    .await;
    s.create(
        stage_run("foo-2-dev")
            .of(("foo", 2, "DEV"))
            .approved_by("admin")
            .job("UnitTest", failing())
            .build(),
    )
    .await;
    s.create(
        stage_run("foo-2-uattest")
            .of(("foo", 2, "UATTest"))
            .job("UAT", running())
            .build(),
    )
    .await;
    let demo = Demo {
        first_stage: s
            .wait_phase("demo-pipeline-1-first-stage", StagePhase::Running)
            .await,
        foo_1_dev: s.wait_phase("foo-1-dev", StagePhase::Succeeded).await,
        foo_2_dev: s.wait_phase("foo-2-dev", StagePhase::Failed).await,
        foo_2_uat: s.wait_phase("foo-2-uattest", StagePhase::Running).await,
    };
    s.wait_cached(&demo.first_stage, "RUNNING").await;
    s.wait_cached(&demo.foo_1_dev, "SUCCEEDED").await;
    s.wait_cached(&demo.foo_2_dev, "FAILED").await;
    s.wait_cached(&demo.foo_2_uat, "RUNNING").await;
    demo
}

/// Removes what depends on the run (ids, dates, the caller's permission).
fn without_run_specifics(mut v: Value) -> Value {
    if let Some(stages) = v["stages"].as_array_mut() {
        for st in stages {
            let st = st.as_object_mut().unwrap();
            st.remove("id");
            st.remove("operate_permission");
            for job in st["jobs"].as_array_mut().unwrap() {
                let job = job.as_object_mut().unwrap();
                job.remove("id");
                job.remove("scheduled_date");
            }
        }
    }
    v
}

/// Asserts a foo/DEV history page is the documented one, field for field, and that
/// its ids and dates are those of the StageRuns.
fn assert_documented_history(got: &Value, demo: &Demo, operate: bool) {
    let documented: Value = serde_json::from_str(DOCUMENTED_HISTORY).unwrap();
    assert_eq!(
        without_run_specifics(got.clone()),
        without_run_specifics(documented),
        "history differs from the documentation: {got:#}"
    );
    for (stage, run) in got["stages"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&demo.foo_2_dev, &demo.foo_1_dev])
    {
        let status = run.status.as_ref().unwrap();
        assert_eq!(stage["id"], json!(status.id.unwrap()), "{stage}");
        assert_eq!(stage["operate_permission"], json!(operate), "{stage}");
        let job = &stage["jobs"][0];
        assert_eq!(job["id"], json!(status.jobs[0].id), "{stage}");
        let scheduled = status.jobs[0]
            .scheduled_at
            .as_ref()
            .unwrap()
            .0
            .as_millisecond();
        assert_eq!(job["scheduled_date"], json!(scheduled), "{stage}");
    }
}

// ---------------------------------------------------------------------------
// GoCD.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gocd_cancels_a_stage_as_documented() {
    let s = setup("sc-gocd").await;
    let demo = demo_data(&s).await;
    let cancel = "/go/api/stages/demo_pipeline/first_stage/cancel";

    // Not authenticated: 401 with GoCD's Basic challenge.
    for caller in [Caller::Anonymous, Caller::BadToken, Caller::BadPassword] {
        let r = s.post(cancel, caller).await;
        r.expect(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"GoCD\""),
            "{}",
            r.what
        );
    }
    // Authenticated without operate permission: 401 as GoCD documents,
    // without a challenge (logging in again would not help).
    for caller in [Caller::Bearer(User::Viewer), Caller::Bearer(User::Nobody)] {
        let r = s.post(cancel, caller).await;
        r.expect(401);
        assert_eq!(r.header("www-authenticate"), None, "{}", r.what);
        assert!(r.body.contains("operate"), "{}: {}", r.what, r.body);
    }
    s.assert_no_cancel_request("after refused cancels").await;

    // A pipeline or stage that never existed: 404, as text or JSON.
    for path in [
        "/go/api/stages/nope/first_stage/cancel",
        "/go/api/stages/demo_pipeline/nope/cancel",
    ] {
        let r = s.post(path, Caller::Basic("admin")).await;
        r.expect(404);
        assert!(r.content_type().starts_with("text/plain"), "{}", r.what);
        let r = s
            .send(
                "POST",
                path,
                Caller::Basic("admin"),
                &[("Accept", "application/json")],
                None,
            )
            .await;
        r.expect(404);
        assert!(r.json()["message"].is_string(), "{}", r.body);
    }

    // Nothing active: 200, ignored; plain text unless JSON is asked for.
    let idle = "/go/api/stages/foo/DEV/cancel";
    s.post(idle, Caller::Basic("admin"))
        .await
        .text(200, "Stage is not active. Cancellation Ignored.");
    s.send(
        "POST",
        idle,
        Caller::Basic("admin"),
        &[("Accept", "application/json")],
        None,
    )
    .await
    .json_eq(
        200,
        json!({"message": "Stage is not active. Cancellation Ignored."}),
    );
    s.assert_no_cancel_request("after cancelling an inactive stage")
        .await;

    // The running stage is cancelled; GoCD's confirmation headers are accepted.
    s.send(
        "POST",
        cancel,
        Caller::Basic("jez"),
        &[
            ("Accept", "application/json"),
            ("Confirm", "true"),
            ("X-GoCD-Confirm", "true"),
        ],
        Some(Vec::new()),
    )
    .await
    .json_eq(200, json!({"message": "Stage cancelled successfully."}));
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spec.requested_by, "jez");
    assert_eq!(
        requests[0].spec.target.uids,
        Some(vec![uid(&demo.first_stage)])
    );
    let sr = s
        .wait_phase("demo-pipeline-1-first-stage", StagePhase::Failed)
        .await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));
    let status = sr.status.as_ref().unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("task was cancelled"));
    assert_eq!(status.cancel.as_ref().unwrap().requested_by, "jez");

    // Once it has ended, cancelling again is ignored and writes nothing.
    s.wait_cached(&sr, "FAILED").await;
    s.post(cancel, Caller::Basic("jez"))
        .await
        .text(200, "Stage is not active. Cancellation Ignored.");
    assert_eq!(s.cancel_requests().await.len(), 1);
    // The other stages were not touched.
    let uat = s.runs().get("foo-2-uattest").await.unwrap();
    assert_eq!(phase(&uat), Some(StagePhase::Running));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gocd_cancels_one_stage_instance() {
    let s = setup("sc-gocd-instance").await;
    let demo = demo_data(&s).await;
    let cancel = "/go/api/stages/foo/2/UATTest/1/cancel";
    let v3 = ("Accept", "application/vnd.go.cd.v3+json");
    let confirm = ("X-GoCD-Confirm", "true");
    let current = |path: &'static str, caller: Caller| {
        let s = &s;
        async move { s.send("POST", path, caller, &[v3, confirm], None).await }
    };
    let op = Caller::Bearer(User::Operator);

    let r = current(cancel, Caller::Anonymous).await;
    r.expect(401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"GoCD\""));
    // The current API answers 403 where the seed's route documents 401.
    let r = current(cancel, Caller::Bearer(User::Viewer)).await;
    r.expect(403);
    assert_eq!(r.header("www-authenticate"), None);
    assert!(r.json()["message"].as_str().unwrap().contains("operate"));

    // Version negotiation as GoCD: a versioned Accept it serves, else its 404.
    for accept in [
        &[][..],
        &[("Accept", "application/json")],
        &[("Accept", "application/vnd.go.cd.v1+json")],
        &[("Accept", "text/plain")],
    ] {
        let mut headers = accept.to_vec();
        headers.push(confirm);
        s.send("POST", cancel, op, &headers, None).await.text(
            404,
            "The url you are trying to reach appears to be incorrect.\n",
        );
    }
    // X-GoCD-Confirm is required on a POST without a body.
    s.send("POST", cancel, op, &[v3], None).await.json_eq(
        400,
        json!({"message": "Missing required header 'X-GoCD-Confirm' with value 'true'"}),
    );
    // A body that is not JSON is refused.
    s.send(
        "POST",
        cancel,
        op,
        &[v3, ("Content-Type", "text/plain")],
        Some(b"x".to_vec()),
    )
    .await
    .expect(415);

    for path in [
        "/go/api/stages/foo/9/UATTest/1/cancel",
        "/go/api/stages/foo/2/UATTest/2/cancel",
        "/go/api/stages/foo/x/UATTest/1/cancel",
        "/go/api/stages/foo/2/UATTest/-1/cancel",
        "/go/api/stages/foo/+2/UATTest/1/cancel",
        "/go/api/stages/foo/2/UATTest/+1/cancel",
        "/go/api/stages/foo/%202/UATTest/1/cancel",
        "/go/api/stages/nope/1/DEV/1/cancel",
        "/go/api/stages/foo/2/nope/1/cancel",
    ] {
        let r = current(path, op).await;
        r.expect(404);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("Not Found")
        );
    }
    for path in [
        "/go/api/stages/foo/1/DEV/1/cancel",
        "/go/api/stages/foo/2/DEV/1/cancel",
    ] {
        current(path, op).await.json_eq(
            200,
            json!({"message": "Stage is not active. Cancellation Ignored."}),
        );
    }
    s.assert_no_cancel_request("before the instance is cancelled")
        .await;

    // The unversioned media type asks for the newest version.
    let r = s
        .send(
            "POST",
            cancel,
            op,
            &[("Accept", "application/vnd.go.cd+json"), confirm],
            None,
        )
        .await;
    r.json_eq(200, json!({"message": "Stage cancelled successfully."}));
    assert!(
        r.content_type()
            .starts_with("application/vnd.go.cd.v3+json"),
        "{}",
        r.content_type()
    );
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spec.requested_by, "operator");
    assert_eq!(
        requests[0].spec.target.uids,
        Some(vec![uid(&demo.foo_2_uat)])
    );
    let sr = s.wait_phase("foo-2-uattest", StagePhase::Failed).await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));
    // Only that instance: demo_pipeline keeps running.
    let other = s.runs().get("demo-pipeline-1-first-stage").await.unwrap();
    assert_eq!(phase(&other), Some(StagePhase::Running));

    // Its stage instance, current and legacy, names who cancelled it.
    s.wait_cached(&sr, "FAILED").await;
    let r = s
        .send("GET", "/go/api/stages/foo/2/UATTest/1", op, &[v3], None)
        .await;
    let v = r.json();
    r.expect(200);
    assert_eq!(v["result"], "Cancelled");
    assert_eq!(v["cancelled_by"], "operator");
    assert_eq!(v["counter"], 1);
    assert_eq!(v["pipeline_counter"], 2);
    assert_eq!(v["jobs"][0]["state"], "Completed");
    let r = s
        .get(
            "/go/api/stages/foo/UATTest/instance/2/1",
            Caller::Basic("jez"),
        )
        .await;
    let v = r.json();
    r.expect(200);
    assert_eq!(v["cancelled_by"], "operator");
    assert_eq!(v["counter"], "1");
    assert_eq!(v["id"], sr.status.as_ref().unwrap().id.unwrap());
    s.send("GET", "/go/api/stages/foo/2/UATTest/1", op, &[], None)
        .await
        .expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gocd_history_has_the_documented_shape_and_pages() {
    let s = setup("sc-history").await;
    let demo = demo_data(&s).await;

    // The documented example, field for field.
    let r = s
        .get("/go/api/stages/foo/DEV/history/0", Caller::Basic("admin"))
        .await;
    r.expect(200);
    let page = r.json();
    assert_documented_history(&page, &demo, true);
    assert!(
        page["stages"][0]["counter"].is_string(),
        "counter is a string"
    );
    // Without an offset: the first page.
    let r = s
        .get("/go/api/stages/foo/DEV/history", Caller::Basic("admin"))
        .await;
    r.expect(200);
    assert_eq!(r.json(), page);
    // operate_permission is the caller's.
    let r = s
        .get(
            "/go/api/stages/foo/DEV/history/0",
            Caller::Bearer(User::Viewer),
        )
        .await;
    r.expect(200);
    assert_documented_history(&r.json(), &demo, false);

    // Pagination: 13 instances, newest first by pipeline counter, then stage counter.
    for counter in 1..=12 {
        s.create(
            stage_run(&format!("paged-{counter}-dev-1"))
                .of(("paged", counter, "DEV"))
                .manual()
                .job("UnitTest", json!({}))
                .build(),
        )
        .await;
    }
    s.create(
        stage_run("paged-12-dev-2")
            .of(("paged", 12, "DEV"))
            .manual()
            .stage_counter(2)
            .job("UnitTest", json!({}))
            .build(),
    )
    .await;
    let url = s.url("/go/api/stages/paged/DEV/history/0");
    eventually_json(
        "all 13 instances in the history",
        T,
        || s.http.get(&url).basic_auth("admin", Some(PASSWORD)),
        |v| v["pagination"]["total"] == 13,
    )
    .await;
    let order = |v: &Value| -> Vec<(i64, String)> {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| {
                (
                    st["pipeline_counter"].as_i64().unwrap(),
                    st["counter"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = s
        .get("/go/api/stages/paged/DEV/history/0", Caller::Basic("admin"))
        .await;
    first.expect(200);
    let first = first.json();
    let mut want: Vec<(i64, String)> = vec![(12, "2".into())];
    want.extend((3..=12).rev().map(|c| (c, "1".to_string())));
    assert_eq!(order(&first), want[..10].to_vec());
    assert_eq!(
        first["pagination"],
        json!({"offset": 0, "total": 13, "page_size": 10})
    );
    let rest = s
        .get(
            "/go/api/stages/paged/DEV/history/10",
            Caller::Basic("admin"),
        )
        .await;
    rest.expect(200);
    let rest = rest.json();
    assert_eq!(
        order(&rest),
        vec![(3, "1".into()), (2, "1".into()), (1, "1".into())]
    );
    assert_eq!(
        rest["pagination"],
        json!({"offset": 10, "total": 13, "page_size": 10})
    );
    let past = s
        .get(
            "/go/api/stages/paged/DEV/history/13",
            Caller::Basic("admin"),
        )
        .await;
    past.json_eq(
        200,
        json!({"stages": [], "pagination": {"offset": 13, "total": 13, "page_size": 10}}),
    );

    // Bad offsets: 400, as text or JSON.
    for bad in ["-1", "abc", "1.5", "%2B1", "1e3", "99999999999999999999"] {
        let path = format!("/go/api/stages/foo/DEV/history/{bad}");
        let r = s.get(&path, Caller::Basic("admin")).await;
        r.expect(400);
        assert!(r.content_type().starts_with("text/plain"), "{}", r.what);
        let r = s
            .send(
                "GET",
                &path,
                Caller::Basic("admin"),
                &[("Accept", "application/json")],
                None,
            )
            .await;
        r.expect(400);
        assert!(r.json()["message"].is_string());
    }
    // Unknown pipeline or stage: 404.
    for path in [
        "/go/api/stages/nope/DEV/history/0",
        "/go/api/stages/foo/nope/history/0",
        "/go/api/stages/nope/DEV/history",
    ] {
        s.get(path, Caller::Basic("admin")).await.expect(404);
    }
    // Not authenticated: 401 with the challenge; no read permission: 401.
    let r = s
        .get("/go/api/stages/foo/DEV/history/0", Caller::Anonymous)
        .await;
    r.expect(401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"GoCD\""));
    s.get(
        "/go/api/stages/foo/DEV/history/0",
        Caller::Bearer(User::Nobody),
    )
    .await
    .expect(401);
    s.assert_no_cancel_request("after reading history").await;
}

// ---------------------------------------------------------------------------
// CodeArts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codearts_stops_builds() {
    let s = setup("sc-codearts").await;
    s.create(
        stage_run("build-19")
            .of((DOCUMENTED_JOB, 19, "build"))
            .job("compile", passing())
            .build(),
    )
    .await;
    s.create(
        stage_run("build-20")
            .of((DOCUMENTED_JOB, 20, "build"))
            .job("compile", stubborn())
            .build(),
    )
    .await;
    s.create(
        stage_run("build-21")
            .of((DOCUMENTED_JOB, 21, "build"))
            .job("compile", running())
            .build(),
    )
    .await;
    let b19 = s.wait_phase("build-19", StagePhase::Succeeded).await;
    let b20 = s.wait_phase("build-20", StagePhase::Running).await;
    let b21 = s.wait_phase("build-21", StagePhase::Running).await;
    s.wait_cached(&b19, "SUCCEEDED").await;
    s.wait_cached(&b20, "RUNNING").await;
    s.wait_cached(&b21, "RUNNING").await;

    let stop = "/v3/jobs/stop";
    let op = Caller::XAuthToken(User::Operator);
    let valid = json!({"job_id": DOCUMENTED_JOB, "build_no": "20"});

    // 401 before anything else, including for a malformed body.
    for caller in [Caller::Anonymous, Caller::BadToken, Caller::BadPassword] {
        s.post_json(stop, caller, &valid)
            .await
            .codearts_error(401, "CB.00060210");
        s.post_raw(stop, caller, b"{")
            .await
            .codearts_error(401, "CB.00060210");
        s.post(&format!("/v3/jobs/{DOCUMENTED_JOB}/20/stop"), caller)
            .await
            .codearts_error(401, "CB.00060210");
    }
    // 400: malformed, missing, empty or wrongly typed fields.
    let bad_bodies: &[(&[u8], &str)] = &[
        (b"{", "CB.00060200"),
        (b"", "CB.00060200"),
        (b"[]", "CB.00060200"),
        (b"\"job\"", "CB.00060200"),
        (br#"{"build_no": "20"}"#, "CB.00060201"),
        (br#"{"job_id": "", "build_no": "20"}"#, "CB.00060201"),
        (br#"{"job_id": "  ", "build_no": "20"}"#, "CB.00060201"),
        (br#"{"job_id": 5, "build_no": "20"}"#, "CB.00060201"),
        (br#"{"job_id": null, "build_no": "20"}"#, "CB.00060201"),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46"}"#,
            "CB.00060202",
        ),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": ""}"#,
            "CB.00060202",
        ),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": 20}"#,
            "CB.00060202",
        ),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "abc"}"#,
            "CB.00060202",
        ),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "0"}"#,
            "CB.00060202",
        ),
        (
            br#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "-20"}"#,
            "CB.00060202",
        ),
    ];
    for (body, code) in bad_bodies {
        s.post_raw(stop, op, body).await.codearts_error(400, code);
    }
    for (path, code) in [
        (format!("/v3/jobs/{DOCUMENTED_JOB}/abc/stop"), "CB.00060202"),
        (format!("/v3/jobs/{DOCUMENTED_JOB}/0/stop"), "CB.00060202"),
        (format!("/v3/jobs/{DOCUMENTED_JOB}/%20/stop"), "CB.00060202"),
        ("/v3/jobs/%20/20/stop".to_string(), "CB.00060201"),
    ] {
        s.post(&path, op).await.codearts_error(400, code);
    }
    // 403: authenticated, but no right to cancel.
    for caller in [
        Caller::XAuthToken(User::Viewer),
        Caller::XAuthToken(User::Nobody),
    ] {
        s.post_json(stop, caller, &valid)
            .await
            .codearts_error(403, "CB.00060211");
        s.post(&format!("/v3/jobs/{DOCUMENTED_JOB}/20/stop"), caller)
            .await
            .codearts_error(403, "CB.00060211");
    }
    // 404: unknown build task, unknown build number.
    s.post_json(stop, op, &json!({"job_id": "nope", "build_no": "20"}))
        .await
        .codearts_error(404, "CB.00060220");
    s.post_json(
        stop,
        op,
        &json!({"job_id": DOCUMENTED_JOB, "build_no": "99"}),
    )
    .await
    .codearts_error(404, "CB.00060221");
    s.post("/v3/jobs/nope/1/stop", op)
        .await
        .codearts_error(404, "CB.00060220");
    s.post(&format!("/v3/jobs/{DOCUMENTED_JOB}/99/stop"), op)
        .await
        .codearts_error(404, "CB.00060221");
    s.assert_no_cancel_request("after refused stops").await;

    // A finished build: false, nothing written.
    s.post_json(
        stop,
        op,
        &json!({"job_id": DOCUMENTED_JOB, "build_no": "19"}),
    )
    .await
    .json_eq(200, json!({"result": false}));
    s.post(&format!("/v3/jobs/{DOCUMENTED_JOB}/19/stop"), op)
        .await
        .json_eq(200, json!({"result": false}));
    s.assert_no_cancel_request("after stopping a finished build")
        .await;

    // An active build: true; still true while it is canceling.
    s.post_json(stop, op, &valid)
        .await
        .json_eq(200, json!({"result": true}));
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spec.requested_by, "operator");
    assert_eq!(requests[0].spec.target.uids, Some(vec![uid(&b20)]));
    let canceling = s.wait_phase("build-20", StagePhase::Canceling).await;
    s.wait_cached(&canceling, "CANCELING").await;
    s.post_json(stop, op, &valid)
        .await
        .json_eq(200, json!({"result": true}));
    assert_eq!(s.cancel_requests().await.len(), 1, "already canceling");

    // The path form, with Authorization instead of X-Auth-Token.
    let path = format!("/v3/jobs/{DOCUMENTED_JOB}/21/stop");
    s.post(&path, Caller::Bearer(User::Operator))
        .await
        .json_eq(200, json!({"result": true}));
    let done = s.wait_phase("build-21", StagePhase::Failed).await;
    assert_eq!(result(&done), Some(RunResult::Cancelled));
    s.wait_cached(&done, "FAILED").await;
    s.post(&path, Caller::Bearer(User::Operator))
        .await
        .json_eq(200, json!({"result": false}));
    assert_eq!(s.cancel_requests().await.len(), 2);
    // The finished build kept its result.
    let b19 = s.runs().get("build-19").await.unwrap();
    assert_eq!(result(&b19), Some(RunResult::Passed));
}

// ---------------------------------------------------------------------------
// CrafterCMS.

/// Publish stages of two sites, as the CrafterCMS APIs see them: mysite
/// runs 1 to 3 running and 4 passed, othersite run 1 running; once the
/// sidecar's cache shows them so, their uids (package ids) by name.
async fn publishing_sites(s: &Sidecar) -> BTreeMap<&'static str, String> {
    for (name, counter, annotations) in [
        ("mysite-1", 1, running()),
        ("mysite-2", 2, running()),
        ("mysite-3", 3, running()),
        ("mysite-4", 4, passing()),
    ] {
        s.create(
            stage_run(name)
                .of(("mysite", counter, "publish"))
                .job("deploy", annotations)
                .build(),
        )
        .await;
    }
    s.create(
        stage_run("othersite-1")
            .of(("othersite", 1, "publish"))
            .job("deploy", running())
            .build(),
    )
    .await;
    let mut runs = BTreeMap::new();
    for (name, want, state) in [
        ("mysite-1", StagePhase::Running, "RUNNING"),
        ("mysite-2", StagePhase::Running, "RUNNING"),
        ("mysite-3", StagePhase::Running, "RUNNING"),
        ("mysite-4", StagePhase::Succeeded, "SUCCEEDED"),
        ("othersite-1", StagePhase::Running, "RUNNING"),
    ] {
        let sr = s.wait_phase(name, want).await;
        s.wait_cached(&sr, state).await;
        runs.insert(name, uid(&sr));
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafter_cancels_publish_requests_all_or_nothing() {
    let s = setup("sc-crafter").await;
    let runs = publishing_sites(&s).await;
    let path = "/api/1/services/api/1/publish/cancel-publish-requests.json";
    let op = Caller::Bearer(User::Operator);
    let message = |m: &str| json!({ "message": m });
    let both = json!({"site_id": "mysite", "package_ids": [runs["mysite-1"], runs["mysite-2"]]});

    for caller in [
        Caller::Anonymous,
        Caller::BadToken,
        Caller::BadPassword,
        Caller::Bearer(User::Viewer),
        Caller::Bearer(User::Nobody),
    ] {
        s.post_json(path, caller, &both)
            .await
            .json_eq(401, message("Unauthorized"));
    }
    let bad: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        br#"{"site_id": "mysite"}"#.to_vec(),
        br#"{"package_ids": ["x"]}"#.to_vec(),
        br#"{"site_id": "mysite", "package_ids": []}"#.to_vec(),
        br#"{"site_id": "mysite", "package_ids": "x"}"#.to_vec(),
        br#"{"site_id": "mysite", "package_ids": [1]}"#.to_vec(),
        br#"{"site_id": "mysite", "package_ids": [""]}"#.to_vec(),
        br#"{"site_id": "mysite", "package_ids": null}"#.to_vec(),
        br#"{"site_id": 3, "package_ids": ["x"]}"#.to_vec(),
        br#"{"site_id": "", "package_ids": ["x"]}"#.to_vec(),
    ];
    for body in &bad {
        s.post_raw(path, op, body)
            .await
            .json_eq(400, message("Invalid parameter(s)"));
    }
    s.post_json(
        path,
        op,
        &json!({"site_id": "nosuchsite", "package_ids": [runs["mysite-1"]]}),
    )
    .await
    .json_eq(404, message("Site not found"));
    // All or nothing: one unknown id, or an id of another site, cancels none.
    for ids in [
        json!([runs["mysite-1"], "00000000-0000-0000-0000-000000000000"]),
        json!([runs["mysite-1"], runs["othersite-1"]]),
    ] {
        s.post_json(path, op, &json!({"site_id": "mysite", "package_ids": ids}))
            .await
            .json_eq(404, message("Package ID not found"));
    }
    s.assert_no_cancel_request("after refused cancels").await;
    assert_eq!(
        phase(&s.runs().get("mysite-1").await.unwrap()),
        Some(StagePhase::Running)
    );

    // The listed packages are cancelled, and only they.
    s.post_json(path, op, &both)
        .await
        .json_eq(200, message("OK"));
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    let mut want = vec![runs["mysite-1"].clone(), runs["mysite-2"].clone()];
    want.sort();
    assert_eq!(requests[0].spec.target.uids, Some(want));
    assert_eq!(requests[0].spec.requested_by, "operator");
    for name in ["mysite-1", "mysite-2"] {
        let sr = s.wait_phase(name, StagePhase::Failed).await;
        assert_eq!(result(&sr), Some(RunResult::Cancelled));
    }
    for name in ["mysite-3", "othersite-1"] {
        assert_eq!(
            phase(&s.runs().get(name).await.unwrap()),
            Some(StagePhase::Running),
            "{name}"
        );
    }
    // A finished package: OK, nothing to do.
    s.post_json(
        path,
        Caller::Basic("admin"),
        &json!({"site_id": "mysite", "package_ids": [runs["mysite-4"]]}),
    )
    .await
    .json_eq(200, message("OK"));
    assert_eq!(s.cancel_requests().await.len(), 1);
}

/// The documented bodies of Studio's API 2 answers.
fn studio_response(code: u64) -> Value {
    let (message, remedial) = match code {
        0 => ("OK", ""),
        1001 => (
            "Invalid parameter(s)",
            "Check API and make sure you're sending the correct parameters",
        ),
        2000 => ("Unauthenticated", "Please login first"),
        2001 => (
            "Unauthorized",
            "You don't have permission to perform this task, please contact your administrator",
        ),
        5000 => ("Site not found", "Check if you sent in the right Site Id"),
        _ => panic!("no documented body for {code}"),
    };
    json!({"response": {"code": code, "message": message, "remedialAction": remedial, "documentationUrl": ""}})
}

fn package_ids(v: &Value) -> Vec<String> {
    v["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("no packages in {v}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studio_cancels_packages_and_lists_the_publishing_queue() {
    let s = setup("sc-studio").await;
    let runs = publishing_sites(&s).await;
    let cancel = "/studio/api/2/publish/cancel";
    let queue = "/studio/api/2/publish/packages?siteId=mysite";
    let op = Caller::Bearer(User::Operator);
    let viewer = Caller::Bearer(User::Viewer);
    // The UI's own body; ids are UUIDs, in any case.
    let both = json!({"siteId": "mysite", "packageIds": [runs["mysite-1"], runs["mysite-2"].to_uppercase()]});

    // Refusals in Studio's envelope; nothing is written.
    for caller in [Caller::Anonymous, Caller::BadToken, Caller::BadPassword] {
        s.post_json(cancel, caller, &both)
            .await
            .json_eq(401, studio_response(2000));
        s.get(queue, caller)
            .await
            .json_eq(401, studio_response(2000));
    }
    for caller in [viewer, Caller::Bearer(User::Nobody)] {
        s.post_json(cancel, caller, &both)
            .await
            .json_eq(403, studio_response(2001));
    }
    s.get(queue, Caller::Bearer(User::Nobody))
        .await
        .json_eq(403, studio_response(2001));
    for (body, field) in [
        (&b"{"[..], None),
        (b"[]", None),
        (br#"{"packageIds": []}"#, Some("siteId")),
        (br#"{"siteId": "", "packageIds": []}"#, Some("siteId")),
        (br#"{"siteId": 3, "packageIds": []}"#, Some("siteId")),
        (
            br#"{"siteId": "mysite", "packageIds": "x"}"#,
            Some("packageIds"),
        ),
        (
            br#"{"siteId": "mysite", "packageIds": [""]}"#,
            Some("packageIds"),
        ),
        (
            br#"{"siteId": "mysite", "packageIds": ["  "]}"#,
            Some("packageIds"),
        ),
        (
            br#"{"siteId": "mysite", "packageIds": [1]}"#,
            Some("packageIds"),
        ),
        (
            br#"{"siteId": "mysite", "packageIds": ["mysite-1"]}"#,
            Some("packageIds"),
        ),
    ] {
        let v = s.post_raw(cancel, op, body).await.studio(400, 1001);
        assert_eq!(
            v["validationErrors"][0]["field"].as_str(),
            field,
            "{}: {v}",
            String::from_utf8_lossy(body)
        );
    }
    s.post_json(
        cancel,
        op,
        &json!({"siteId": "nosuchsite", "packageIds": [runs["mysite-1"]]}),
    )
    .await
    .json_eq(404, studio_response(5000));
    // All or nothing: one unknown id, or an id of another site, cancels none.
    for ids in [
        json!([runs["mysite-1"], "00000000-0000-0000-0000-000000000000"]),
        json!([runs["mysite-1"], runs["othersite-1"]]),
    ] {
        let v = s
            .post_json(cancel, op, &json!({"siteId": "mysite", "packageIds": ids}))
            .await
            .studio(404, 7000);
        assert_eq!(v["response"]["message"], "Content not found");
    }
    s.assert_no_cancel_request("after refused cancels").await;
    assert_eq!(
        phase(&s.runs().get("mysite-1").await.unwrap()),
        Some(StagePhase::Running)
    );

    // The queue: newest first, paged, filtered, in Studio's package shape.
    let v = s.get(queue, viewer).await.studio(200, 0);
    assert_eq!(v["response"], studio_response(0)["response"]);
    assert_eq!(
        (&v["total"], &v["offset"], &v["limit"]),
        (&json!(4), &json!(0), &json!(4))
    );
    let newest_first: Vec<String> = ["mysite-4", "mysite-3", "mysite-2", "mysite-1"]
        .iter()
        .map(|n| runs[n].clone())
        .collect();
    assert_eq!(package_ids(&v), newest_first);
    let done = &v["packages"][0];
    assert_eq!(done["siteId"], "mysite");
    assert_eq!(done["environment"], "publish");
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(done["approver"], "changes");
    assert!(
        done["schedule"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{done}"
    );
    assert_eq!(v["packages"][1]["state"], "READY_FOR_LIVE");
    let v = s
        .get(&format!("{queue}&offset=1&limit=2"), viewer)
        .await
        .studio(200, 0);
    assert_eq!(
        (&v["total"], &v["offset"], &v["limit"]),
        (&json!(4), &json!(1), &json!(2))
    );
    assert_eq!(package_ids(&v), newest_first[1..3]);
    let v = s
        .get(&format!("{queue}&offset=4"), viewer)
        .await
        .studio(200, 0);
    assert_eq!((&v["total"], &v["limit"]), (&json!(4), &json!(0)));
    assert_eq!(package_ids(&v), Vec::<String>::new());
    let v = s
        .get(
            &format!("{queue}&states=READY_FOR_LIVE&environment=publish"),
            viewer,
        )
        .await
        .studio(200, 0);
    assert_eq!(package_ids(&v), newest_first[1..]);
    let v = s
        .get(&format!("{queue}&states=COMPLETED&states=BLOCKED"), viewer)
        .await
        .studio(200, 0);
    assert_eq!(package_ids(&v), newest_first[..1]);
    for (bad, field) in [
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("limit=-5", "limit"),
        ("limit=99999999999", "limit"),
        ("path=%2Fsite%2F.*", "path"),
    ] {
        let v = s
            .get(&format!("{queue}&{bad}"), viewer)
            .await
            .studio(400, 1001);
        assert_eq!(v["validationErrors"][0]["field"], field, "{bad}: {v}");
    }
    s.get("/studio/api/2/publish/packages", viewer)
        .await
        .studio(400, 1001);
    s.get("/studio/api/2/publish/packages?siteId=nosuchsite", viewer)
        .await
        .json_eq(404, studio_response(5000));

    // The listed packages are cancelled, and only they.
    s.post_json(cancel, op, &both)
        .await
        .json_eq(200, studio_response(0));
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    let mut want = vec![runs["mysite-1"].clone(), runs["mysite-2"].clone()];
    want.sort();
    assert_eq!(requests[0].spec.target.uids, Some(want.clone()));
    assert_eq!(requests[0].spec.requested_by, "operator");
    for name in ["mysite-1", "mysite-2"] {
        let sr = s.wait_phase(name, StagePhase::Failed).await;
        assert_eq!(result(&sr), Some(RunResult::Cancelled));
    }
    for name in ["mysite-3", "othersite-1"] {
        assert_eq!(
            phase(&s.runs().get(name).await.unwrap()),
            Some(StagePhase::Running),
            "{name}"
        );
    }
    // The queue shows them cancelled.
    let (url, token) = (
        s.url(&format!("{queue}&states=CANCELLED")),
        support::token(User::Viewer),
    );
    eventually_json(
        "the queue to show two cancelled packages",
        T,
        || s.http.get(&url).bearer_auth(&token),
        |v| {
            let mut ids = package_ids(v);
            ids.sort();
            ids == want
        },
    )
    .await;
    // Again, and with a finished package: OK, nothing more is written.
    s.post_json(cancel, Caller::Basic("admin"), &both)
        .await
        .json_eq(200, studio_response(0));
    s.post_json(
        cancel,
        op,
        &json!({"siteId": "mysite", "packageIds": [runs["mysite-4"]]}),
    )
    .await
    .json_eq(200, studio_response(0));
    // No ids: nothing to do, as in Studio.
    s.post_json(cancel, op, &json!({"siteId": "mysite", "packageIds": []}))
        .await
        .json_eq(200, studio_response(0));
    assert_eq!(s.cancel_requests().await.len(), 1);

    // Paths and methods under /studio/api/2/ answer in the v2 envelope...
    s.get(cancel, op).await.studio(405, 1001);
    s.get("/studio/api/2/publish/nothing", op)
        .await
        .studio(404, 7000);
    // ...while the v1 route keeps its own bodies.
    let v1 = "/api/1/services/api/1/publish/cancel-publish-requests.json";
    let message = |m: &str| json!({ "message": m });
    s.post_json(
        v1,
        Caller::Anonymous,
        &json!({"site_id": "mysite", "package_ids": [runs["mysite-3"]]}),
    )
    .await
    .json_eq(401, message("Unauthorized"));
    s.post_json(v1, op, &json!({"site_id": "mysite", "package_ids": []}))
        .await
        .json_eq(400, message("Invalid parameter(s)"));
    s.get(v1, op)
        .await
        .json_eq(405, message("Method Not Allowed"));
    s.post_json(
        v1,
        op,
        &json!({"site_id": "mysite", "package_ids": [runs["mysite-3"]]}),
    )
    .await
    .json_eq(200, message("OK"));
    let sr = s.wait_phase("mysite-3", StagePhase::Failed).await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));
}

// ---------------------------------------------------------------------------
// Cloud Foundry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_foundry_cancels_tasks() {
    let s = setup("sc-cf").await;
    let container = json!({"name": "main", "image": "busybox", "command": ["rake"], "args": ["db:migrate"],
                           "resources": {"requests": {"memory": "256Mi"}}});
    let task = stage_run("migrate")
        .of(("app", 7, "tasks"))
        .grace(10)
        .container(container)
        .job(
            "migrate",
            json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"}),
        )
        .build();
    s.create(task).await;
    s.create(
        stage_run("done")
            .of(("app", 8, "tasks"))
            .job("migrate", passing())
            .build(),
    )
    .await;
    let running_task = s.wait_phase("migrate", StagePhase::Running).await;
    let done = s.wait_phase("done", StagePhase::Succeeded).await;
    s.wait_cached(&running_task, "RUNNING").await;
    s.wait_cached(&done, "SUCCEEDED").await;
    let guid = uid(&running_task);
    let get = format!("/v3/tasks/{guid}");
    let cancel = format!("/v3/tasks/{guid}/actions/cancel");
    let op = Caller::Bearer(User::Operator);

    // The task as CF shows it.
    let r = s.get(&get, op).await;
    r.expect(200);
    let t = r.json();
    assert_eq!(t["guid"], guid);
    assert_eq!(t["sequence_id"], 7);
    assert_eq!(t["name"], "migrate");
    assert_eq!(t["command"], "rake db:migrate");
    assert_eq!(t["state"], "RUNNING");
    assert_eq!(t["memory_in_mb"], 256);
    assert_eq!(t["result"], json!({"failure_reason": null}));
    for field in ["created_at", "updated_at"] {
        let v = t[field].as_str().unwrap();
        assert!(
            v.ends_with('Z') && v.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{field}: {v}"
        );
    }
    assert_eq!(t["links"]["self"]["href"], s.url(&get));
    assert_eq!(t["links"]["cancel"]["href"], s.url(&cancel));
    assert_eq!(t["links"]["cancel"]["method"], "POST");

    // Errors, before anything is written.
    for caller in [Caller::Anonymous, Caller::BadToken, Caller::BadPassword] {
        for r in [s.get(&get, caller).await, s.post(&cancel, caller).await] {
            r.cf_error(
                401,
                10002,
                "CF-NotAuthenticated",
                Some("Authentication error"),
            );
        }
    }
    // A caller who cannot read the task does not learn that it exists.
    let nobody = Caller::Bearer(User::Nobody);
    for r in [s.get(&get, nobody).await, s.post(&cancel, nobody).await] {
        r.cf_error(404, 10010, "CF-ResourceNotFound", Some("Task not found"));
    }
    for path in [
        "/v3/tasks/00000000-0000-0000-0000-000000000000",
        "/v3/tasks/00000000-0000-0000-0000-000000000000/actions/cancel",
    ] {
        let r = if path.ends_with("cancel") {
            s.post(path, op).await
        } else {
            s.get(path, op).await
        };
        r.cf_error(404, 10010, "CF-ResourceNotFound", Some("Task not found"));
    }
    // A caller who can read but not cancel: 403.
    s.get(&get, Caller::Bearer(User::Viewer)).await.expect(200);
    s.post(&cancel, Caller::Bearer(User::Viewer))
        .await
        .cf_error(403, 10003, "CF-NotAuthorized", None);
    // A succeeded task cannot be cancelled.
    s.post(&format!("/v3/tasks/{}/actions/cancel", uid(&done)), op)
        .await
        .cf_error(
            422,
            10008,
            "CF-UnprocessableEntity",
            Some("Task state is SUCCEEDED and therefore cannot be canceled"),
        );
    s.assert_no_cancel_request("after refused cancels").await;

    // Cancel: 202 CANCELING, and again while it is canceling.
    let r = s.post(&cancel, op).await;
    r.expect(202);
    let t = r.json();
    assert_eq!(t["guid"], guid);
    assert_eq!(t["state"], "CANCELING");
    assert_eq!(t["links"]["self"]["href"], s.url(&get));
    let canceling = s.wait_phase("migrate", StagePhase::Canceling).await;
    s.wait_cached(&canceling, "CANCELING").await;
    let r = s.post(&cancel, Caller::XAuthToken(User::Operator)).await;
    r.expect(202);
    assert_eq!(r.json()["state"], "CANCELING");
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1, "a repeated cancel writes nothing new");
    assert_eq!(requests[0].spec.target.uids, Some(vec![guid.clone()]));
    assert_eq!(requests[0].spec.requested_by, "operator");

    // Then FAILED, because it was cancelled.
    let failed = s.wait_phase("migrate", StagePhase::Failed).await;
    assert_eq!(result(&failed), Some(RunResult::Cancelled));
    s.wait_cached(&failed, "FAILED").await;
    let r = s.get(&get, op).await;
    r.expect(200);
    assert_eq!(
        r.json()["result"],
        json!({"failure_reason": "task was cancelled"})
    );
    s.post(&cancel, op).await.cf_error(
        422,
        10008,
        "CF-UnprocessableEntity",
        Some("Task state is FAILED and therefore cannot be canceled"),
    );
    assert_eq!(s.cancel_requests().await.len(), 1);
}

/// The guids of a task list's resources.
fn task_guids(page: &Value) -> Vec<String> {
    page["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources: {page}"))
        .iter()
        .map(|t| t["guid"].as_str().unwrap().to_string())
        .collect()
}

/// Task guids as a set, for lists whose order a test does not fix.
fn guid_set<I: IntoIterator<Item = String>>(guids: I) -> BTreeSet<String> {
    guids.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_foundry_root_lists_put_cancel_and_tokens() {
    let s = setup("sc-cflist").await;

    // The root documents, unauthenticated, each with a request id.
    let r = s.get("/", Caller::Anonymous).await;
    r.expect(200);
    assert!(r.header("x-vcap-request-id").is_some_and(|v| !v.is_empty()));
    let links = r.json()["links"].clone();
    assert_eq!(links["self"]["href"], s.base);
    assert_eq!(links["cloud_controller_v3"]["href"], s.url("/v3"));
    assert!(
        links["cloud_controller_v3"]["meta"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert_eq!(links["login"]["href"], s.base);
    assert_eq!(links["uaa"]["href"], s.base);
    for absent in [
        "cloud_controller_v2",
        "logging",
        "log_stream",
        "log_cache",
        "app_ssh",
    ] {
        assert!(links[absent].is_null(), "{absent}: {links}");
    }
    let r = s
        .send(
            "GET",
            "/v3",
            Caller::Anonymous,
            &[("X-VCAP-Request-ID", "req-42")],
            None,
        )
        .await;
    r.expect(200);
    assert_eq!(r.header("x-vcap-request-id"), Some("req-42"));
    assert_eq!(
        r.json(),
        json!({"links": {"self": {"href": s.url("/v3")}, "tasks": {"href": s.url("/v3/tasks")}}})
    );

    // The token endpoint the root leads to: a Kubernetes token in, the same out.
    let viewer_token = support::token(User::Viewer);
    let form = |body: String| {
        s.send(
            "POST",
            "/oauth/token",
            Caller::Anonymous,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(body.into_bytes()),
        )
    };
    let r = form(format!(
        "grant_type=refresh_token&scope=&refresh_token={viewer_token}"
    ))
    .await;
    r.expect(200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let t = r.json();
    assert_eq!(t["access_token"], viewer_token.as_str());
    assert_eq!(t["token_type"], "bearer");
    let r = form("grant_type=refresh_token&refresh_token=not-a-token-anyone-issued".into()).await;
    r.expect(401);
    assert_eq!(r.json()["error"], "invalid_token");
    let r = form("grant_type=password&username=admin&password=badger".into()).await;
    r.expect(400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");

    // Tasks: three of app "shop", one of app "other".
    s.create(
        stage_run("shop-1")
            .labels(json!({"env": "prod", "team": "a"}))
            .of(("shop", 1, "tasks"))
            .grace(2)
            .job("t", stubborn())
            .build(),
    )
    .await;
    s.create(
        stage_run("shop-2")
            .labels(json!({"env": "dev"}))
            .of(("shop", 2, "tasks"))
            .job("t", passing())
            .build(),
    )
    .await;
    s.create(
        stage_run("shop-3")
            .labels(json!({"env": "prod"}))
            .of(("shop", 3, "tasks"))
            .job("t", running())
            .build(),
    )
    .await;
    s.create(
        stage_run("other-1")
            .of(("other", 1, "tasks"))
            .job("t", running())
            .build(),
    )
    .await;
    let mut uids = BTreeMap::new();
    for (name, want, state) in [
        ("shop-1", StagePhase::Running, "RUNNING"),
        ("shop-2", StagePhase::Succeeded, "SUCCEEDED"),
        ("shop-3", StagePhase::Running, "RUNNING"),
        ("other-1", StagePhase::Running, "RUNNING"),
    ] {
        let sr = s.wait_phase(name, want).await;
        s.wait_cached(&sr, state).await;
        uids.insert(name, uid(&sr));
    }
    let set = |names: &[&str]| guid_set(names.iter().map(|n| uids[n].clone()));
    let viewer = Caller::Bearer(User::Viewer);

    // Everything a viewer may read, oldest first, in one default page.
    let r = s.get("/v3/tasks", viewer).await;
    r.expect(200);
    assert!(r.header("x-vcap-request-id").is_some());
    let page = r.json();
    assert_eq!(
        guid_set(task_guids(&page)),
        set(&["shop-1", "shop-2", "shop-3", "other-1"])
    );
    assert_eq!(page["pagination"]["total_results"], 4);
    assert_eq!(page["pagination"]["total_pages"], 1);
    assert_eq!(
        page["pagination"]["first"]["href"],
        s.url("/v3/tasks?page=1&per_page=50")
    );
    assert!(page["pagination"]["next"].is_null() && page["pagination"]["previous"].is_null());
    let created: Vec<String> = page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["created_at"].as_str().unwrap().to_string())
        .collect();
    assert!(created.is_sorted(), "{created:?}");
    let r = s.get("/v3/tasks?order_by=-created_at", viewer).await;
    let newest: Vec<String> = r.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["created_at"].as_str().unwrap().to_string())
        .collect();
    assert!(newest.iter().rev().is_sorted(), "{newest:?}");

    // Each filter.
    let guids_q = format!("/v3/tasks?guids={},{}", uids["shop-2"], uids["other-1"]);
    for (path, want) in [
        (
            "/v3/tasks?states=RUNNING",
            set(&["shop-1", "shop-3", "other-1"]),
        ),
        ("/v3/tasks?states=SUCCEEDED,FAILED", set(&["shop-2"])),
        (guids_q.as_str(), set(&["shop-2", "other-1"])),
        ("/v3/tasks?names=shop-3", set(&["shop-3"])),
        ("/v3/tasks?sequence_ids=2,3", set(&["shop-2", "shop-3"])),
        (
            "/v3/tasks?label_selector=env%3Dprod",
            set(&["shop-1", "shop-3"]),
        ),
        (
            "/v3/tasks?label_selector=env%20in%20(prod,dev),team",
            set(&["shop-1"]),
        ),
        ("/v3/tasks?label_selector=!env", set(&["other-1"])),
        (
            "/v3/tasks?label_selector=env!%3Dprod&states=SUCCEEDED",
            set(&["shop-2"]),
        ),
        ("/v3/apps/shop/tasks", set(&["shop-1", "shop-2", "shop-3"])),
        ("/v3/apps/shop/tasks?sequence_ids=3", set(&["shop-3"])),
        ("/v3/apps/other/tasks?states=SUCCEEDED", set(&[])),
    ] {
        let r = s.get(path, viewer).await;
        r.expect(200);
        assert_eq!(guid_set(task_guids(&r.json())), want, "{path}");
    }

    // Pages, followed through their absolute links, keep the filters.
    let mut seen = Vec::new();
    let mut next = Some(s.url("/v3/tasks?states=RUNNING&order_by=-created_at&per_page=1"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let path = url
            .strip_prefix(&s.base)
            .expect("an absolute link to the sidecar");
        let r = s.get(path, viewer).await;
        r.expect(200);
        let page = r.json();
        let p = &page["pagination"];
        pages += 1;
        assert_eq!(p["total_results"], 3, "{page}");
        assert_eq!(p["total_pages"], 3, "{page}");
        for link in ["first", "last"] {
            let href = p[link]["href"].as_str().unwrap();
            assert!(
                href.starts_with(&s.url("/v3/tasks?"))
                    && href.contains("states=RUNNING")
                    && href.contains("order_by=-created_at")
                    && href.contains("per_page=1"),
                "{link}: {href}"
            );
        }
        assert_eq!(p["previous"].is_null(), pages == 1, "{page}");
        seen.extend(task_guids(&page));
        next = p["next"]["href"].as_str().map(String::from);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 3, "no task twice: {seen:?}");
    assert_eq!(guid_set(seen), set(&["shop-1", "shop-3", "other-1"]));

    // Bad queries, in the Cloud Controller's words.
    for (query, detail) in [
        ("per_page=0", "Per page must be a positive integer"),
        ("per_page=5001", "Per page must be between 1 and 5000"),
        ("page=0", "Page must be a positive integer"),
        (
            "order_by=name",
            "Order by can only be: 'created_at', 'updated_at'",
        ),
        (
            "sequence_ids=1,x",
            "Sequence ids must be integers (not 'x')",
        ),
        (
            "label_selector=env%20in%20(prod",
            "Invalid label_selector value: unbalanced parentheses",
        ),
    ] {
        for list in ["/v3/tasks", "/v3/apps/shop/tasks"] {
            s.get(&format!("{list}?{query}"), viewer).await.cf_error(
                400,
                10005,
                "CF-BadQueryParameter",
                Some(&format!("The query parameter is invalid: {detail}")),
            );
        }
    }
    let r = s.get("/v3/tasks?states=DONE", viewer).await;
    r.cf_error(400, 10005, "CF-BadQueryParameter", None);
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("'DONE'")
    );
    let r = s.get("/v3/tasks?fruits=apple&per_page=1", viewer).await;
    r.cf_error(400, 10005, "CF-BadQueryParameter", None);
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("The query parameter is invalid: Unknown query parameter(s): 'fruits'."),
        "{}",
        r.body
    );

    // Who may see what.
    for caller in [Caller::Anonymous, Caller::BadToken, Caller::BadPassword] {
        for path in ["/v3/tasks", "/v3/apps/shop/tasks", "/v3/tasks?per_page=0"] {
            s.get(path, caller).await.cf_error(
                401,
                10002,
                "CF-NotAuthenticated",
                Some("Authentication error"),
            );
        }
    }
    let nobody = Caller::Bearer(User::Nobody);
    let r = s.get("/v3/tasks", nobody).await;
    r.expect(200);
    assert_eq!(r.json()["pagination"]["total_results"], 0);
    for path in ["/v3/apps/shop/tasks", "/v3/apps/nope/tasks"] {
        s.get(path, nobody).await.cf_error(
            404,
            10010,
            "CF-ResourceNotFound",
            Some("App not found"),
        );
    }
    s.get("/v3/apps/nope/tasks", viewer).await.cf_error(
        404,
        10010,
        "CF-ResourceNotFound",
        Some("App not found"),
    );

    // The cf CLI's cancel: refusals first, nothing written.
    let put = |name: &str| format!("/v3/tasks/{}/cancel", uids[name]);
    let op = Caller::Bearer(User::Operator);
    let sidecar = &s;
    let send_put = |path: String, caller: Caller| async move {
        sidecar.send("PUT", &path, caller, &[], None).await
    };
    send_put(put("shop-1"), Caller::Anonymous).await.cf_error(
        401,
        10002,
        "CF-NotAuthenticated",
        Some("Authentication error"),
    );
    send_put(put("shop-1"), nobody).await.cf_error(
        404,
        10010,
        "CF-ResourceNotFound",
        Some("Task not found"),
    );
    send_put(
        "/v3/tasks/00000000-0000-0000-0000-000000000000/cancel".into(),
        op,
    )
    .await
    .cf_error(404, 10010, "CF-ResourceNotFound", Some("Task not found"));
    send_put(put("shop-1"), viewer)
        .await
        .cf_error(403, 10003, "CF-NotAuthorized", None);
    send_put(put("shop-2"), op).await.cf_error(
        422,
        10008,
        "CF-UnprocessableEntity",
        Some("Task state is SUCCEEDED and therefore cannot be canceled"),
    );
    s.post(&put("shop-1"), op)
        .await
        .cf_error(405, 10000, "CF-NotFound", None);
    s.assert_no_cancel_request("after refused PUT cancels")
        .await;

    // Then for real: 202 CANCELING, and the StageRun ends Failed/Cancelled.
    let r = send_put(put("shop-1"), op).await;
    r.expect(202);
    let t = r.json();
    assert_eq!(t["guid"], uids["shop-1"].as_str());
    assert_eq!(t["state"], "CANCELING");
    assert!(r.header("x-vcap-request-id").is_some());
    let failed = s.wait_phase("shop-1", StagePhase::Failed).await;
    assert_eq!(result(&failed), Some(RunResult::Cancelled));
    s.wait_cached(&failed, "FAILED").await;
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].spec.target.uids,
        Some(vec![uids["shop-1"].clone()])
    );
    assert_eq!(requests[0].spec.requested_by, "operator");
    let r = s.get("/v3/tasks?states=FAILED", viewer).await;
    let page = r.json();
    assert_eq!(task_guids(&page), vec![uids["shop-1"].clone()]);
    assert_eq!(
        page["resources"][0]["result"]["failure_reason"],
        "task was cancelled"
    );
    send_put(put("shop-1"), op).await.cf_error(
        422,
        10008,
        "CF-UnprocessableEntity",
        Some("Task state is FAILED and therefore cannot be canceled"),
    );
    assert_eq!(s.cancel_requests().await.len(), 1);

    // A sidecar serving a second namespace, where only the operator may read:
    // each caller lists only the namespaces it may list StageRuns in.
    let second = TestNamespace::new("sc-cflist-b").await;
    world::grant(
        &second,
        "stagerun-reader",
        json!({"apiGroups": ["cancel.dev"], "resources": ["stageruns"], "verbs": ["list"]}),
        &["operator"],
    )
    .await;
    let elsewhere = second
        .api::<StageRun>()
        .create(
            &PostParams::default(),
            &stage_run("shop-9")
                .of(("shop", 9, "tasks"))
                .job("t", running())
                .build(),
        )
        .await
        .unwrap();
    let (addr, server) = world::spawn_sidecar_serving(
        support::client(User::Admin).await,
        &[s.ns.name.as_str(), second.name.as_str()],
        None,
        Duration::from_secs(1),
    )
    .await;
    let _server = world::AbortOnDrop(vec![server.abort_handle()]);
    world::wait_ready(&s.http, addr).await;
    let list_as = |user: User| {
        let http = s.http.clone();
        async move {
            let r = http
                .get(format!("http://{addr}/v3/tasks?per_page=5000"))
                .bearer_auth(support::token(user))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            guid_set(task_guids(&r.json::<Value>().await.unwrap()))
        }
    };
    let everything: BTreeSet<String> = uids.values().cloned().chain([uid(&elsewhere)]).collect();
    eventually("the second namespace cached", T, || {
        let everything = everything.clone();
        let listed = list_as(User::Admin);
        async move {
            let got = listed.await;
            (got == everything).then_some(()).ok_or(format!("{got:?}"))
        }
    })
    .await;
    assert_eq!(list_as(User::Operator).await, everything);
    assert_eq!(
        list_as(User::Viewer).await,
        guid_set(uids.values().cloned()),
        "the viewer may not list the second namespace"
    );
    assert!(list_as(User::Nobody).await.is_empty());
}

// ---------------------------------------------------------------------------
// The API documents' examples, run with curl as written.

/// Runs a documented curl command line through the shell, as a reader would paste
/// it; `-sS -w` only add the status code to the output.
async fn curl(command: &str) -> (u16, String) {
    let line = format!("{command} -sS -w '\\n%{{http_code}}'");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .expect("run curl")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_examples_work_verbatim_with_curl() {
    let s = setup("sc-docs").await;
    let demo = demo_data(&s).await;
    let build = s
        .create(
            stage_run("build-20")
                .of((DOCUMENTED_JOB, 20, "build"))
                .job("compile", running())
                .build(),
        )
        .await;
    let mut site = Vec::new();
    for i in 1..=3 {
        site.push(
            s.create(
                stage_run(&format!("mysite-{i}"))
                    .of(("mysite", i, "publish"))
                    .job("deploy", running())
                    .build(),
            )
            .await,
        );
    }
    let task = s
        .create(
            stage_run("task")
                .of(("app", 1, "tasks"))
                .job("migrate", running())
                .build(),
        )
        .await;
    for sr in site.iter().chain([&build, &task]) {
        let sr = s.wait_phase(&sr.name_any(), StagePhase::Running).await;
        s.wait_cached(&sr, "RUNNING").await;
    }
    let host = &s.base;
    let operator = support::token(User::Operator);

    // The older GoCD Stages document, as jez.
    let (code, body) = curl(&format!(
        "curl -u jez:badger -d \"\" {host}/go/api/stages/demo_pipeline/first_stage/cancel"
    ))
    .await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Stage cancelled successfully.")
    );
    let sr = s
        .wait_phase("demo-pipeline-1-first-stage", StagePhase::Failed)
        .await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));
    assert_eq!(sr.status.unwrap().cancel.unwrap().requested_by, "jez");

    // The GoCD Stages document's cancel, as admin, on the next run of the stage.
    s.create(
        stage_run("demo-pipeline-2-first-stage")
            .of(("demo_pipeline", 2, "first_stage"))
            .job("first_job", running())
            .build(),
    )
    .await;
    let next = s
        .wait_phase("demo-pipeline-2-first-stage", StagePhase::Running)
        .await;
    s.wait_cached(&next, "RUNNING").await;
    let gocd_cancel = format!(
        "curl -u admin:badger -d \"\" {host}/go/api/stages/demo_pipeline/first_stage/cancel"
    );
    let (code, body) = curl(&gocd_cancel).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Stage cancelled successfully.")
    );
    let sr = s
        .wait_phase("demo-pipeline-2-first-stage", StagePhase::Failed)
        .await;
    assert_eq!(
        sr.status
            .as_ref()
            .unwrap()
            .cancel
            .as_ref()
            .unwrap()
            .requested_by,
        "gocd-admin"
    );
    s.wait_cached(&sr, "FAILED").await;
    let (code, body) = curl(&gocd_cancel).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Stage is not active. Cancellation Ignored.")
    );

    // The GoCD Stages document's history.
    let (code, body) = curl(&format!(
        "curl -u admin:badger {host}/go/api/stages/foo/DEV/history/0"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_documented_history(&serde_json::from_str(&body).unwrap(), &demo, true);

    // The CodeArts document: the example request, with its body as written.
    let (code, body) = curl(&format!(
        "curl -X POST -H 'X-Auth-Token: {operator}' -H 'Content-Type: application/json' -d '{{\n  \"job_id\" : \"f9d6c8466d614a9788e9a0acf6c15f46\",\n  \"build_no\" : \"20\"\n}}' {host}/v3/jobs/stop"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    let documented_response: Value = serde_json::from_str("{\n  \"result\" : true\n}").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        documented_response
    );
    let sr = s.wait_phase("build-20", StagePhase::Failed).await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));

    // The CrafterCMS document: its package ids do not exist here, so nothing is cancelled...
    let crafter_body = r#"{
        "site_id" : "mysite",
        "package_ids" : [
            "588d5441-9aa9-4fb7-9a51-8c9a80f4f1d5",
            "9a7a1d3a-5b33-43c7-8214-6795335a56b7",
            "32fce3fa-99f9-4f17-a723-53febe772bf3"
        ]
    }"#;
    let crafter = |body: &str| {
        format!(
            "curl -X POST -H 'Authorization: Bearer {operator}' -H 'Content-Type: application/json' -d '{body}' {host}/api/1/services/api/1/publish/cancel-publish-requests.json"
        )
    };
    let (code, body) = curl(&crafter(crafter_body)).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Package ID not found"})
    );
    for sr in &site {
        let now = s.runs().get(&sr.name_any()).await.unwrap();
        assert_eq!(phase(&now), Some(StagePhase::Running));
    }
    // ...and with the ids of real packages, they are.
    let real = crafter_body
        .replace("588d5441-9aa9-4fb7-9a51-8c9a80f4f1d5", &uid(&site[0]))
        .replace("9a7a1d3a-5b33-43c7-8214-6795335a56b7", &uid(&site[1]))
        .replace("32fce3fa-99f9-4f17-a723-53febe772bf3", &uid(&site[2]));
    let (code, body) = curl(&crafter(&real)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "OK"})
    );
    for sr in &site {
        let sr = s.wait_phase(&sr.name_any(), StagePhase::Failed).await;
        assert_eq!(result(&sr), Some(RunResult::Cancelled));
    }

    // The Cloud Foundry document, with the operator's token as the Authorization value.
    let (code, body) = curl(&format!(
        "curl -X POST -H 'Authorization: bearer {operator}' {host}/v3/tasks/{}/actions/cancel",
        uid(&task)
    ))
    .await;
    assert_eq!(code, 202, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["state"], "CANCELING");
    assert_eq!(t["guid"], uid(&task));
    let sr = s.wait_phase("task", StagePhase::Failed).await;
    assert_eq!(result(&sr), Some(RunResult::Cancelled));
    s.wait_cached(&sr, "FAILED").await;
}

// ---------------------------------------------------------------------------
// Idempotency.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cancel_twice_creates_one_cancel_request() {
    let s = setup("sc-idem").await;
    // Stubborn jobs keep every run active (Running, then Canceling) for the
    // whole test, so that both calls of a pair find it active.
    let names = [
        "gocd",
        "instance",
        "race",
        "codearts",
        "codearts-path",
        "crafter",
        "cf",
    ];
    let mut uids = BTreeMap::new();
    for name in names {
        s.create(
            stage_run(name)
                .of((name, 1, "DEV"))
                .job("UnitTest", stubborn())
                .build(),
        )
        .await;
    }
    for name in names {
        let sr = s.wait_phase(name, StagePhase::Running).await;
        s.wait_cached(&sr, "RUNNING").await;
        uids.insert(name, uid(&sr));
    }
    let op = Caller::Bearer(User::Operator);
    let crafter = json!({"site_id": "crafter", "package_ids": [uids["crafter"]]});
    for _ in 0..2 {
        s.post("/go/api/stages/gocd/DEV/cancel", op)
            .await
            .text(200, "Stage cancelled successfully.");
        s.send(
            "POST",
            "/go/api/stages/instance/1/DEV/1/cancel",
            op,
            &[
                ("Accept", "application/vnd.go.cd.v3+json"),
                ("X-GoCD-Confirm", "true"),
            ],
            None,
        )
        .await
        .json_eq(200, json!({"message": "Stage cancelled successfully."}));
        s.post_json(
            "/v3/jobs/stop",
            op,
            &json!({"job_id": "codearts", "build_no": "1"}),
        )
        .await
        .json_eq(200, json!({"result": true}));
        s.post("/v3/jobs/codearts-path/1/stop", op)
            .await
            .json_eq(200, json!({"result": true}));
        s.post_json(
            "/api/1/services/api/1/publish/cancel-publish-requests.json",
            op,
            &crafter,
        )
        .await
        .json_eq(200, json!({"message": "OK"}));
        s.post(&format!("/v3/tasks/{}/actions/cancel", uids["cf"]), op)
            .await
            .expect(202);
    }
    // Two identical calls at the same time.
    let (a, b) = tokio::join!(
        s.post("/go/api/stages/race/DEV/cancel", op),
        s.post("/go/api/stages/race/DEV/cancel", op)
    );
    a.text(200, "Stage cancelled successfully.");
    b.text(200, "Stage cancelled successfully.");

    let requests = s.cancel_requests().await;
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        for u in r.spec.target.uids.clone().unwrap_or_default() {
            *per_run.entry(u).or_default() += 1;
        }
    }
    assert_eq!(requests.len(), names.len(), "one CancelRequest per run");
    for name in names {
        assert_eq!(per_run.get(&uids[name]), Some(&1), "{name}");
    }
    let mut apis: Vec<String> = requests
        .iter()
        .map(|r| r.labels()["cancel.dev/api"].clone())
        .collect();
    apis.sort();
    assert_eq!(
        apis,
        [
            "cf", "codearts", "codearts", "crafter", "gocd", "gocd", "gocd"
        ]
    );
    for name in names {
        s.wait_phase(name, StagePhase::Canceling).await;
    }
}

// ---------------------------------------------------------------------------
// Bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_in_each_api_format_and_writes_nothing() {
    let s = setup("sc-bad").await;
    s.create(
        stage_run("bad-1")
            .of(("bad", 1, "DEV"))
            .job("UnitTest", running())
            .build(),
    )
    .await;
    s.create(
        stage_run("done-1")
            .of(("done", 1, "DEV"))
            .job("UnitTest", passing())
            .build(),
    )
    .await;
    let active = s.wait_phase("bad-1", StagePhase::Running).await;
    let done = s.wait_phase("done-1", StagePhase::Succeeded).await;
    s.wait_cached(&active, "RUNNING").await;
    s.wait_cached(&done, "SUCCEEDED").await;
    let guid = uid(&active);
    let admin = Caller::Basic("admin");
    const LIMIT: usize = 64 * 1024;

    // A valid request padded past 64 KiB: it would cancel if it were read.
    let padded = |body: Value, to: usize| -> Vec<u8> {
        let mut v = body;
        v["padding"] = json!("");
        let len = v.to_string().len();
        v["padding"] = json!("x".repeat(to - len));
        let out = v.to_string().into_bytes();
        assert_eq!(out.len(), to);
        out
    };
    let big = vec![b' '; LIMIT + 1];
    let codearts_big = padded(json!({"job_id": "bad", "build_no": "1"}), LIMIT + 1);
    let crafter_big = padded(json!({"site_id": "bad", "package_ids": [guid]}), LIMIT + 1);
    let json_accept = [("Accept", "application/json")];

    let r = s
        .send(
            "POST",
            "/go/api/stages/bad/DEV/cancel",
            admin,
            &[],
            Some(big.clone()),
        )
        .await;
    r.expect(413);
    assert!(r.content_type().starts_with("text/plain"), "{}", r.what);
    for (method, path) in [
        ("POST", "/go/api/stages/bad/DEV/cancel"),
        ("POST", "/go/api/stages/bad/1/DEV/1/cancel"),
        ("GET", "/go/api/stages/bad/DEV/history/0"),
    ] {
        let r = s
            .send(method, path, admin, &json_accept, Some(big.clone()))
            .await;
        r.expect(413);
        assert!(r.json()["message"].is_string(), "{}", r.what);
    }
    s.post_raw("/v3/jobs/stop", admin, &codearts_big)
        .await
        .codearts_error(413, "CB.00060231");
    s.post_raw("/v3/jobs/bad/1/stop", admin, &big)
        .await
        .codearts_error(413, "CB.00060231");
    let r = s
        .post_raw(
            "/api/1/services/api/1/publish/cancel-publish-requests.json",
            admin,
            &crafter_big,
        )
        .await;
    r.expect(413);
    assert!(r.json()["message"].is_string());
    s.post_raw(&format!("/v3/tasks/{guid}/actions/cancel"), admin, &big)
        .await
        .cf_error(413, 1001, "CF-MessageParseError", None);
    s.send(
        "GET",
        &format!("/v3/tasks/{guid}"),
        admin,
        &[],
        Some(big.clone()),
    )
    .await
    .cf_error(413, 1001, "CF-MessageParseError", None);
    // Streamed without a Content-Length: refused all the same.
    let path = s.users.path.with_file_name("big.json");
    std::fs::write(&path, &codearts_big).unwrap();
    let (code, body) = curl(&format!(
        "curl -X POST -u admin:badger -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' --data-binary @{} {}/v3/jobs/stop",
        path.display(),
        s.base
    ))
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error_code"],
        "CB.00060231"
    );
    // Exactly 64 KiB is accepted.
    s.post_raw(
        "/v3/jobs/stop",
        admin,
        &padded(json!({"job_id": "done", "build_no": "1"}), LIMIT),
    )
    .await
    .json_eq(200, json!({"result": false}));

    // A body that cannot be read (malformed chunks): 400 in each family's format.
    let unreadable = |path: String| raw_malformed_chunked_post(s.base.clone(), path);
    let (code, ctype, body) = unreadable("/go/api/stages/bad/DEV/cancel".into()).await;
    assert_eq!(
        (code, ctype.starts_with("text/plain")),
        (400, true),
        "{body}"
    );
    let (code, _, body) = unreadable("/v3/jobs/stop".into()).await;
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error_code"],
        "CB.00060200"
    );
    let (code, _, body) =
        unreadable("/api/1/services/api/1/publish/cancel-publish-requests.json".into()).await;
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Invalid parameter(s)"})
    );
    let (code, _, body) = unreadable(format!("/v3/tasks/{guid}/actions/cancel")).await;
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["errors"][0]["title"],
        "CF-MessageParseError"
    );

    // Unknown routes: 404 in the format of the family the path belongs to.
    let r = s.get("/go/api/nothing", admin).await;
    r.text(404, "Not Found");
    s.send("GET", "/go/api/nothing", admin, &json_accept, None)
        .await
        .json_eq(404, json!({"message": "Not Found"}));
    s.post("/go/api/stages/bad/DEV/cancel/now/please", admin)
        .await
        .expect(404);
    s.post("/go/api/stages/bad/DEV/history/0/1", admin)
        .await
        .expect(404);
    s.post("/v3/jobs/bad/1/stop/now", admin)
        .await
        .codearts_error(404, "CB.00060222");
    s.post("/v3/jobs", admin)
        .await
        .codearts_error(404, "CB.00060222");
    s.post(
        "/api/1/services/api/1/publish/cancel-everything.json",
        admin,
    )
    .await
    .json_eq(404, json!({"message": "Not Found"}));
    s.get("/v3/apps", admin)
        .await
        .cf_error(404, 10000, "CF-NotFound", None);
    s.post(&format!("/v3/tasks/{guid}/actions/delete"), admin)
        .await
        .cf_error(404, 10000, "CF-NotFound", None);
    for path in ["/nothing", "/v2/info", "/healthz/now"] {
        s.get(path, admin).await.expect(404);
    }

    // Wrong methods: 405 with Allow, in each family's format.
    let wrong: Vec<(&str, String, &str)> = vec![
        ("GET", "/go/api/stages/bad/DEV/cancel".into(), "POST"),
        ("PUT", "/go/api/stages/bad/1/DEV/1/cancel".into(), "POST"),
        (
            "POST",
            "/go/api/stages/bad/DEV/history/0".into(),
            "GET, HEAD",
        ),
        (
            "DELETE",
            "/go/api/stages/bad/DEV/history".into(),
            "GET, HEAD",
        ),
        ("GET", "/v3/jobs/stop".into(), "POST"),
        ("DELETE", "/v3/jobs/bad/1/stop".into(), "POST"),
        (
            "GET",
            "/api/1/services/api/1/publish/cancel-publish-requests.json".into(),
            "POST",
        ),
        ("GET", format!("/v3/tasks/{guid}/actions/cancel"), "POST"),
        ("DELETE", format!("/v3/tasks/{guid}"), "GET, HEAD"),
        ("POST", "/healthz".into(), "GET, HEAD"),
        ("PUT", "/metrics".into(), "GET, HEAD"),
    ];
    for (method, path, allow) in &wrong {
        let r = s.send(method, path, admin, &[], None).await;
        r.expect(405);
        assert_eq!(r.header("allow"), Some(*allow), "{}", r.what);
        if path.starts_with("/v3/jobs") {
            r.codearts_error(405, "CB.00060230");
        } else if path.starts_with("/v3/tasks") {
            r.cf_error(405, 10000, "CF-NotFound", None);
        } else if path.starts_with("/api/") {
            r.json_eq(405, json!({"message": "Method Not Allowed"}));
        } else if path.starts_with("/go/") {
            r.text(405, "Method Not Allowed");
            s.send(method, path, admin, &json_accept, None)
                .await
                .json_eq(405, json!({"message": "Method Not Allowed"}));
        } else {
            assert!(r.content_type().starts_with("text/plain"));
        }
    }

    s.assert_no_cancel_request("after every refused call").await;
    let still = s.runs().get("bad-1").await.unwrap();
    assert_eq!(phase(&still), Some(StagePhase::Running));
    assert!(still.status.unwrap().cancel.is_none());
}

/// POSTs a chunked body whose first chunk size is not hexadecimal, over a raw
/// connection (HTTP clients do not send such things); answers (status,
/// content type, body).
async fn raw_malformed_chunked_post(base: String, path: String) -> (u16, String, String) {
    let host = base.trim_start_matches("http://").to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nnot a chunk\r\n0\r\n\r\n"
    );
    let answer = support::raw_http::exchange(&host, &req, T).await;
    let (status, body) = (answer.status, answer.body.as_str());
    // As written on the wire, but in lower case.
    let ctype = answer
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(status < 500, "POST {path} answered {status}: {body}");
    (status, ctype, body.to_string())
}

// ---------------------------------------------------------------------------
// Who may do what.

/// An endpoint of the matrix: name, method, path, body, and the status
/// expected per column (anonymous, bad credentials, no rights, viewer,
/// operator, admin).
type MatrixRow = (&'static str, &'static str, String, Option<String>, [u16; 6]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix() {
    let s = setup("sc-authz").await;
    // Finished, so that allowed calls change nothing and rows stay
    // independent; Cloud Foundry's cancel needs an active task per success.
    s.create(
        stage_run("mx-1-dev")
            .of(("mx", 1, "DEV"))
            .job("UnitTest", passing())
            .build(),
    )
    .await;
    s.create(
        stage_run("mxcf-idle")
            .of(("mxcf", 1, "tasks"))
            .job("t", running())
            .build(),
    )
    .await;
    for i in 2..=5 {
        s.create(
            stage_run(&format!("mxcf-{i}"))
                .of(("mxcf", i, "tasks"))
                .job("t", running())
                .build(),
        )
        .await;
    }
    let finished = s.wait_phase("mx-1-dev", StagePhase::Succeeded).await;
    s.wait_cached(&finished, "SUCCEEDED").await;
    let idle = s.wait_phase("mxcf-idle", StagePhase::Running).await;
    s.wait_cached(&idle, "RUNNING").await;
    let mut fresh = Vec::new();
    for i in 2..=5 {
        let sr = s
            .wait_phase(&format!("mxcf-{i}"), StagePhase::Running)
            .await;
        s.wait_cached(&sr, "RUNNING").await;
        fresh.push(uid(&sr));
    }
    let done = uid(&finished);

    // Columns: anonymous, bad credentials, no rights, viewer, operator, admin.
    let callers: Vec<(Caller, usize)> = vec![
        (Caller::Anonymous, 0),
        (Caller::BadToken, 1),
        (Caller::BadPassword, 1),
        (Caller::Bearer(User::Nobody), 2),
        (Caller::Bearer(User::Viewer), 3),
        (Caller::Bearer(User::Operator), 4),
        (Caller::LowercaseBearer(User::Operator), 4),
        (Caller::XAuthToken(User::Operator), 4),
        (Caller::Basic("admin"), 5),
    ];
    let crafter = json!({"site_id": "mx", "package_ids": [done]}).to_string();
    let studio = json!({"siteId": "mx", "packageIds": [done]}).to_string();
    let codearts = json!({"job_id": "mx", "build_no": "1"}).to_string();
    let endpoints: Vec<MatrixRow> = vec![
        (
            "GoCD cancel",
            "POST",
            "/go/api/stages/mx/DEV/cancel".into(),
            None,
            [401, 401, 401, 401, 200, 200],
        ),
        (
            "GoCD instance cancel",
            "POST",
            "/go/api/stages/mx/1/DEV/1/cancel".into(),
            None,
            [401, 401, 403, 403, 200, 200],
        ),
        (
            "GoCD history",
            "GET",
            "/go/api/stages/mx/DEV/history/0".into(),
            None,
            [401, 401, 401, 200, 200, 200],
        ),
        (
            "CodeArts stop",
            "POST",
            "/v3/jobs/stop".into(),
            Some(codearts),
            [401, 401, 403, 403, 200, 200],
        ),
        (
            "CodeArts stop by path",
            "POST",
            "/v3/jobs/mx/1/stop".into(),
            None,
            [401, 401, 403, 403, 200, 200],
        ),
        (
            "Crafter cancel",
            "POST",
            "/api/1/services/api/1/publish/cancel-publish-requests.json".into(),
            Some(crafter),
            [401, 401, 401, 401, 200, 200],
        ),
        (
            "Studio cancel",
            "POST",
            "/studio/api/2/publish/cancel".into(),
            Some(studio),
            [401, 401, 403, 403, 200, 200],
        ),
        (
            "Studio packages",
            "GET",
            "/studio/api/2/publish/packages?siteId=mx".into(),
            None,
            [401, 401, 403, 200, 200, 200],
        ),
        (
            "CF cancel",
            "POST",
            format!("/v3/tasks/{}/actions/cancel", uid(&idle)),
            None,
            [401, 401, 404, 403, 202, 202],
        ),
        (
            "CF get",
            "GET",
            format!("/v3/tasks/{done}"),
            None,
            [401, 401, 404, 200, 200, 200],
        ),
    ];
    let mut fresh = fresh.into_iter();
    let mut failures = Vec::new();
    for (name, method, path, body, expected) in &endpoints {
        for (caller, col) in &callers {
            let want = expected[*col];
            // Each successful CF cancel gets a task of its own.
            let path = if want == 202 {
                format!("/v3/tasks/{}/actions/cancel", fresh.next().unwrap())
            } else {
                path.clone()
            };
            let r = s
                .send(
                    method,
                    &path,
                    *caller,
                    &[
                        ("Content-Type", "application/json"),
                        // The current GoCD route needs these; the others ignore them.
                        ("Accept", "application/vnd.go.cd.v3+json"),
                        ("X-GoCD-Confirm", "true"),
                    ],
                    body.clone().map(String::into_bytes),
                )
                .await;
            if r.status != want {
                failures.push(format!(
                    "{name} as {caller:?}: want {want}, got {} ({})",
                    r.status, r.body
                ));
                continue;
            }
            if *name == "GoCD history" && want == 200 {
                let operate = r.json()["stages"][0]["operate_permission"].clone();
                if operate != json!(*col != 3) {
                    failures.push(format!(
                        "{name} as {caller:?}: operate_permission {operate}"
                    ));
                }
            }
            if want == 401 && name.starts_with("GoCD") {
                let challenge = r.header("www-authenticate") == Some("Basic realm=\"GoCD\"");
                if challenge != (*col <= 1) {
                    failures.push(format!(
                        "{name} as {caller:?}: WWW-Authenticate {:?}",
                        r.header("www-authenticate")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorisation matrix:\n{}",
        failures.join("\n")
    );

    // Only the four successful Cloud Foundry cancels wrote anything.
    let requests = s.cancel_requests().await;
    let mut by: Vec<String> = requests
        .iter()
        .map(|r| r.spec.requested_by.clone())
        .collect();
    by.sort();
    assert_eq!(by, ["gocd-admin", "operator", "operator", "operator"]);
    let idle_now = s.runs().get("mxcf-idle").await.unwrap();
    assert_eq!(phase(&idle_now), Some(StagePhase::Running));
    let finished_now = s.runs().get("mx-1-dev").await.unwrap();
    assert_eq!(result(&finished_now), Some(RunResult::Passed));
}

// ---------------------------------------------------------------------------
// Operations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_openapi() {
    let s = setup("sc-ops").await;
    s.get("/healthz", Caller::Anonymous).await.text(200, "ok");
    s.get("/readyz", Caller::Anonymous).await.text(200, "ok");
    let head = s
        .send("HEAD", "/healthz", Caller::Anonymous, &[], None)
        .await;
    head.expect(200);
    assert!(head.body.is_empty());

    // Some traffic, then the counters show it.
    s.post("/go/api/stages/nope/DEV/cancel", Caller::Basic("admin"))
        .await
        .expect(404);
    s.post("/v3/jobs/stop", Caller::Anonymous).await.expect(401);
    let r = s.get("/metrics", Caller::Anonymous).await;
    r.expect(200);
    assert!(r.content_type().starts_with("text/plain"));
    for want in [
        "http_requests_total",
        r#"http_requests_total{route="gocd_cancel",code="404"} 1"#,
        r#"http_requests_total{route="codearts_stop",code="401"} 1"#,
        "http_request_duration_seconds_bucket",
        "stageruns_cached",
    ] {
        assert!(r.body.contains(want), "metrics lack {want}:\n{}", r.body);
    }

    let r = s.get("/openapi.json", Caller::Anonymous).await;
    r.expect(200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/go/api/stages/{pipeline}/{stage}/cancel",
        "/v3/jobs/stop",
        "/api/1/services/api/1/publish/cancel-publish-requests.json",
        "/v3/tasks/{guid}/actions/cancel",
    ] {
        assert!(documented.contains(path), "{path} is not documented");
    }
}

// ---------------------------------------------------------------------------
// CodeArts: Huawei AK/SK signing, the reads, and a users file that changes.

/// What a signed request signs, and how.
struct Signing<'a> {
    access: &'a str,
    secret: &'a str,
    /// `X-Sdk-Date`.
    date: String,
    /// Header names signed (lowercase, sorted).
    signed: &'a [&'a str],
}

impl Signing<'_> {
    fn now() -> Self {
        Signing {
            access: world::ACCESS_KEY,
            secret: world::SECRET_KEY,
            date: sdk_date(k8s_openapi::jiff::Timestamp::now()),
            signed: &["content-type", "host", "x-sdk-date"],
        }
    }
}

fn sdk_date(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

impl Sidecar {
    /// The headers a Huawei SDK sends for `method path?query` with `body`:
    /// Content-Type, X-Sdk-Date and the Authorization signature.
    fn sign(
        &self,
        how: &Signing,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Vec<(String, String)> {
        use cancel_operator::sidecar::aksk;
        use warp::http::{HeaderMap, HeaderValue, Method};
        let host = self.base.trim_start_matches("http://");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("host", HeaderValue::from_str(host).unwrap());
        headers.insert("x-sdk-date", HeaderValue::from_str(&how.date).unwrap());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let req = aksk::Call {
            method: &method,
            path,
            query,
            headers: &headers,
            body,
        };
        let signed: Vec<String> = how.signed.iter().map(|h| h.to_string()).collect();
        let canonical = aksk::canonical_request(&req, &signed).unwrap();
        let signature = aksk::hmac_sha256(
            how.secret.as_bytes(),
            aksk::string_to_sign(&how.date, &canonical).as_bytes(),
        );
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Sdk-Date".into(), how.date.clone()),
            (
                "Authorization".into(),
                format!(
                    "SDK-HMAC-SHA256 Access={}, SignedHeaders={}, Signature={}",
                    how.access,
                    signed.join(";"),
                    hex::encode(signature)
                ),
            ),
        ]
    }

    /// Sends `headers` (from [`Sidecar::sign`]) with `body`.
    async fn send_signed(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Reply {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!body.is_empty()).then(|| body.to_vec());
        self.send(method, path_and_query, Caller::Anonymous, &h, body)
            .await
    }

    /// Signs and sends in one go.
    async fn signed(&self, how: &Signing<'_>, method: &str, path: &str, body: &[u8]) -> Reply {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let headers = self.sign(how, method, p, q, body);
        self.send_signed(method, path, &headers, body).await
    }
}

impl Reply {
    /// Asserts a 401 CB.00060210 whose message contains `why`.
    fn refused_because(&self, why: &str) {
        self.codearts_error(401, "CB.00060210");
        let msg = self.json()["error_msg"].as_str().unwrap().to_string();
        assert!(msg.contains(why), "{}: {msg}", self.what);
        assert!(!msg.contains(world::SECRET_KEY), "{}: {msg}", self.what);
    }
}

const AKSK_JOB: &str = "aksk0000000000000000000000000001";

#[tokio::test]
async fn codearts_accepts_huawei_aksk_signatures() {
    let s = setup("sc-aksk").await;
    s.create(
        stage_run("aksk-1")
            .of((AKSK_JOB, 1, "build"))
            .job("compile", running())
            .build(),
    )
    .await;
    let b1 = s.wait_phase("aksk-1", StagePhase::Running).await;
    s.wait_cached(&b1, "RUNNING").await;

    let stop = "/v3/jobs/stop";
    let body = json!({"job_id": AKSK_JOB, "build_no": "1"}).to_string();
    let body = body.as_bytes();

    // Every refusal: 401 in CodeArts format, saying why, writing nothing.
    let bad_sig = {
        let mut h = s.sign(&Signing::now(), "POST", stop, "", body);
        let auth = &mut h[2].1;
        let last = auth.pop().unwrap();
        auth.push(if last == '0' { '1' } else { '0' });
        h
    };
    s.send_signed("POST", stop, &bad_sig, body)
        .await
        .refused_because("signature does not match");
    let wrong_secret = Signing {
        secret: "not-the-secret-key-of-this-access-key",
        ..Signing::now()
    };
    s.signed(&wrong_secret, "POST", stop, body)
        .await
        .refused_because("signature does not match");
    let unknown = Signing {
        access: "NOSUCHACCESSKEY",
        ..Signing::now()
    };
    s.signed(&unknown, "POST", stop, body)
        .await
        .refused_because("unknown access key NOSUCHACCESSKEY");
    let now = k8s_openapi::jiff::Timestamp::now();
    for skewed in [
        now - k8s_openapi::jiff::SignedDuration::from_secs(16 * 60),
        now + k8s_openapi::jiff::SignedDuration::from_secs(16 * 60),
    ] {
        let old = Signing {
            date: sdk_date(skewed),
            ..Signing::now()
        };
        s.signed(&old, "POST", stop, body)
            .await
            .refused_because("at most 900s are allowed");
    }
    let malformed_date = Signing {
        date: "2026-01-02T03:04:05Z".into(),
        ..Signing::now()
    };
    s.signed(&malformed_date, "POST", stop, body)
        .await
        .refused_because("YYYYMMDDTHHMMSSZ");
    let no_date = Signing {
        signed: &["content-type", "host"],
        ..Signing::now()
    };
    s.signed(&no_date, "POST", stop, body)
        .await
        .refused_because("SignedHeaders must include x-sdk-date");
    // Tampered body: build 1 signed, build 2 sent.
    let h = s.sign(&Signing::now(), "POST", stop, "", body);
    let other = json!({"job_id": AKSK_JOB, "build_no": "2"}).to_string();
    s.send_signed("POST", stop, &h, other.as_bytes())
        .await
        .refused_because("signature does not match");
    // Tampered path.
    let h = s.sign(
        &Signing::now(),
        "POST",
        &format!("/v3/jobs/{AKSK_JOB}/2/stop"),
        "",
        b"",
    );
    s.send_signed("POST", &format!("/v3/jobs/{AKSK_JOB}/1/stop"), &h, b"")
        .await
        .refused_because("signature does not match");
    // Tampered query.
    let history = format!("/v3/jobs/{AKSK_JOB}/history");
    let h = s.sign(&Signing::now(), "GET", &history, "limit=10", b"");
    s.send_signed("GET", &format!("{history}?limit=100"), &h, b"")
        .await
        .refused_because("signature does not match");
    // An unsigned payload.
    let mut h = s.sign(&Signing::now(), "POST", stop, "", body);
    h.push(("X-Sdk-Content-Sha256".into(), "UNSIGNED-PAYLOAD".into()));
    s.send_signed("POST", stop, &h, body)
        .await
        .refused_because("unsigned payloads are not accepted");
    // Another algorithm.
    s.send(
        "POST",
        stop,
        Caller::Anonymous,
        &[(
            "Authorization",
            "SDK-HMAC-SM3 Access=A, SignedHeaders=host, Signature=00",
        )],
        Some(body.to_vec()),
    )
    .await
    .refused_because("not supported");
    // Signing is for the CodeArts routes only.
    let gocd = "/go/api/stages/anything/build/cancel";
    let r = s.signed(&Signing::now(), "POST", gocd, b"").await;
    r.expect(401);
    // A read may repeat its signature (a client polling within one second
    // sends the same one).
    let status = format!("/v3/jobs/{AKSK_JOB}/status");
    let h = s.sign(&Signing::now(), "GET", &status, "", b"");
    for _ in 0..2 {
        s.send_signed("GET", &status, &h, b"")
            .await
            .json_eq(200, json!({"result": true}));
    }
    // Host need not be signed (Huawei's Go SDK does not sign it), but where
    // it is, another Host than the one signed does not verify.
    let no_host = Signing {
        signed: &["content-type", "x-sdk-date"],
        ..Signing::now()
    };
    s.signed(&no_host, "GET", &status, b"")
        .await
        .json_eq(200, json!({"result": true}));
    let mut h = s.sign(&Signing::now(), "GET", &status, "", b"");
    h.push(("Host".into(), "sidecar.example".into()));
    s.send_signed("GET", &status, &h, b"")
        .await
        .refused_because("signature does not match");
    s.assert_no_cancel_request("after refused signed requests")
        .await;

    // A signed stop cancels the running build, as the access key's user.
    let h = s.sign(&Signing::now(), "POST", stop, "", body);
    s.send_signed("POST", stop, &h, body)
        .await
        .json_eq(200, json!({"result": true}));
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spec.requested_by, "jez");
    let done = s.wait_phase("aksk-1", StagePhase::Failed).await;
    assert_eq!(result(&done), Some(RunResult::Cancelled));
    // The same signed request again: refused, nothing more written.
    s.send_signed("POST", stop, &h, body)
        .await
        .refused_because("already used");
    assert_eq!(s.cancel_requests().await.len(), 1);

    // X-Auth-Token beside an Authorization header of another scheme.
    let token = support::token(User::Viewer);
    for scheme in ["Digest username=\"x\"", "Negotiate abc", "SomethingElse"] {
        s.send(
            "GET",
            &status,
            Caller::Anonymous,
            &[("Authorization", scheme), ("X-Auth-Token", &token)],
            None,
        )
        .await
        .expect(200);
    }
    s.send(
        "GET",
        &status,
        Caller::Anonymous,
        &[("Authorization", "Digest username=\"x\"")],
        None,
    )
    .await
    .codearts_error(401, "CB.00060210");
}

#[tokio::test]
async fn codearts_reads_status_and_history() {
    let s = setup("sc-ca-reads").await;
    let job = "reads000000000000000000000000001";
    for (name, counter, annotations) in [
        ("reads-1", 1, passing()),
        ("reads-2", 2, failing()),
        ("reads-3", 3, running()),
    ] {
        s.create(
            stage_run(name)
                .of((job, counter, "build"))
                .job("compile", annotations)
                .build(),
        )
        .await;
    }
    let r1 = s.wait_phase("reads-1", StagePhase::Succeeded).await;
    let r2 = s.wait_phase("reads-2", StagePhase::Failed).await;
    let r3 = s.wait_phase("reads-3", StagePhase::Running).await;
    s.wait_cached(&r1, "SUCCEEDED").await;
    s.wait_cached(&r2, "FAILED").await;
    s.wait_cached(&r3, "RUNNING").await;
    let viewer = Caller::XAuthToken(User::Viewer);

    let status = format!("/v3/jobs/{job}/status");
    s.get(&status, viewer)
        .await
        .json_eq(200, json!({"result": true}));
    let signed = s.signed(&Signing::now(), "GET", &status, b"").await;
    signed.json_eq(200, json!({"result": true}));

    let history = format!("/v3/jobs/{job}/history?offset=0&limit=10&interval=30");
    let v = s.get(&history, viewer).await.expect(200).json();
    assert_eq!(v["total"], 3, "{v}");
    let records = v["history_records"].as_array().unwrap();
    let summary: Vec<(i64, &str)> = records
        .iter()
        .map(|r| {
            (
                r["build_number"].as_i64().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(3, "RUNNING"), (2, "FAILURE"), (1, "SUCCESS")],
        "{v}"
    );
    assert_eq!(records[0]["end_time"], "", "{v}");
    assert_eq!(records[0]["job_id"], job);
    assert_eq!(records[2]["end_time"].as_str().unwrap().len(), 19, "{v}");
    // Pages of `limit` builds.
    let page = s
        .get(&format!("/v3/jobs/{job}/history?offset=1&limit=2"), viewer)
        .await
        .expect(200)
        .json();
    assert_eq!(page["total"], 3);
    assert_eq!(page["history_records"][0]["build_number"], 1, "{page}");
    // The SDK's signed form, with its query.
    s.signed(
        &Signing::now(),
        "GET",
        &format!("/v3/jobs/{job}/history?offset=0&limit=1&interval=7"),
        b"",
    )
    .await
    .expect(200);

    let details = s
        .get(&format!("/v3/jobs/{job}/3/history-details"), viewer)
        .await
        .expect(200)
        .json();
    assert_eq!(details["job_name"], job);
    assert_eq!(details["build_number"], 3);
    assert_eq!(details["project_id"], s.ns.name.as_str());
    assert_eq!(details["build_steps"][0]["name"], "build/compile");
    assert_eq!(details["build_steps"][0]["status"], "running", "{details}");
    let failed = s
        .get(&format!("/v3/jobs/{job}/2/history-details"), viewer)
        .await
        .expect(200)
        .json();
    assert_eq!(failed["build_steps"][0]["status"], "error", "{failed}");

    // Errors.
    for bad in [
        "offset=-1",
        "limit=0",
        "limit=101",
        "interval=31",
        "offset=x",
    ] {
        s.get(&format!("/v3/jobs/{job}/history?{bad}"), viewer)
            .await
            .codearts_error(400, "CB.00060203");
    }
    s.get(&format!("/v3/jobs/{job}/0/history-details"), viewer)
        .await
        .codearts_error(400, "CB.00060202");
    s.get(&format!("/v3/jobs/{job}/9/history-details"), viewer)
        .await
        .codearts_error(404, "CB.00060221");
    for path in [
        "/v3/jobs/nope/status".to_string(),
        "/v3/jobs/nope/history".to_string(),
        "/v3/jobs/nope/1/history-details".to_string(),
    ] {
        s.get(&path, viewer)
            .await
            .codearts_error(404, "CB.00060220");
    }
    for path in [
        status.clone(),
        history.clone(),
        format!("/v3/jobs/{job}/1/history-details"),
    ] {
        s.get(&path, Caller::XAuthToken(User::Nobody))
            .await
            .codearts_error(403, "CB.00060211");
        s.get(&path, Caller::Anonymous)
            .await
            .codearts_error(401, "CB.00060210");
    }

    // Stop the running build; the reads follow.
    s.post_json(
        "/v3/jobs/stop",
        Caller::XAuthToken(User::Operator),
        &json!({"job_id": job, "build_no": "3"}),
    )
    .await
    .json_eq(200, json!({"result": true}));
    let r3 = s.wait_phase("reads-3", StagePhase::Failed).await;
    s.wait_cached(&r3, "FAILED").await;
    s.get(&status, viewer)
        .await
        .json_eq(200, json!({"result": false}));
    let v = s.get(&history, viewer).await.expect(200).json();
    assert_eq!(v["history_records"][0]["result"], "ABORTED", "{v}");
    assert_eq!(
        v["history_records"][0]["end_time"].as_str().unwrap().len(),
        19,
        "{v}"
    );
}

#[tokio::test]
async fn a_changed_users_file_takes_effect_without_restart() {
    let s = setup("sc-users-reload").await;
    let status = "/v3/jobs/nope/status";
    // jez/badger logs in (404: authenticated, no such job).
    s.get(status, Caller::Basic("jez"))
        .await
        .codearts_error(404, "CB.00060220");
    // A new password for jez, and a new access key.
    let hash = bcrypt::hash("new-password", 4).unwrap();
    let rotated = format!(
        "users:\n- name: jez\n  passwordHash: \"{hash}\"\n  username: jez\naccessKeys:\n- accessKey: ROTATEDKEY\n  secretKey: rotated-secret-key-000000001\n  username: jez\n"
    );
    // Written aside and renamed in, as the kubelet swaps a Secret volume.
    let tmp = s.users.path.with_file_name("users.yaml.tmp");
    std::fs::write(&tmp, &rotated).unwrap();
    std::fs::rename(&tmp, &s.users.path).unwrap();
    let (http, url) = (s.http.clone(), s.url(status));
    eventually("the new password to work", T, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .get(&url)
                .basic_auth("jez", Some("new-password"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            (r.status() == 404)
                .then_some(())
                .ok_or(format!("{}", r.status()))
        }
    })
    .await;
    s.get(status, Caller::Basic("jez"))
        .await
        .codearts_error(401, "CB.00060210");
    s.get(status, Caller::Basic("admin"))
        .await
        .codearts_error(401, "CB.00060210");
    let rotated_key = Signing {
        access: "ROTATEDKEY",
        secret: "rotated-secret-key-000000001",
        ..Signing::now()
    };
    s.signed(&rotated_key, "GET", status, b"")
        .await
        .codearts_error(404, "CB.00060220");
    s.signed(&Signing::now(), "GET", status, b"")
        .await
        .refused_because("unknown access key");

    // A broken file is ignored: the users loaded before stay.
    std::fs::write(&tmp, "users: [{name: jez, passwordHash: not-bcrypt}]\n").unwrap();
    std::fs::rename(&tmp, &s.users.path).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = s
        .http
        .get(s.url(status))
        .basic_auth("jez", Some("new-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A cleanup job is an ordinary job in every API: GoCD's history lists it
/// with its state and result, and Cloud Foundry sees the task canceling
/// until the cleanup has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_jobs_show_in_gocd_history_and_keep_the_task_canceling() {
    let s = setup("sc-cleanup").await;
    let run = s
        .create(
            stage_run("tidy-1-dev")
                .of(("tidy", 1, "DEV"))
                .job(
                    "UnitTest",
                    json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "1s"}),
                )
                .cleanup("report", "Always", json!({"sim.cancel.dev/run-for": "10s"}))
                .build(),
        )
        .await;
    let running = s.wait_phase("tidy-1-dev", StagePhase::Running).await;
    s.wait_cached(&running, "RUNNING").await;
    let guid = uid(&run);
    let op = Caller::Bearer(User::Operator);
    s.post(&format!("/v3/tasks/{guid}/actions/cancel"), op)
        .await
        .expect(202);

    // During the cleanup.
    wait_for(&s.runs(), "tidy-1-dev", "the cleanup to run", T, |sr| {
        sr.status.as_ref().is_some_and(|st| {
            st.jobs
                .iter()
                .any(|j| j.name == "report" && j.state == JobState::Building)
        })
    })
    .await;
    let history = s.url("/go/api/stages/tidy/DEV/history/0");
    let job = |page: &Value, name: &str| -> Value {
        page["stages"][0]["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let page = eventually_json(
        "GoCD to show the cleanup job building",
        T,
        || s.http.get(&history).basic_auth("admin", Some(PASSWORD)),
        |v| job(v, "report")["state"] == "Building",
    )
    .await;
    assert_eq!(job(&page, "report")["result"], "Unknown");
    assert_eq!(job(&page, "UnitTest")["state"], "Completed");
    assert_eq!(job(&page, "UnitTest")["result"], "Cancelled");
    let r = s.get(&format!("/v3/tasks/{guid}"), op).await;
    r.expect(200);
    assert_eq!(r.json()["state"], "CANCELING");
    assert_eq!(r.json()["result"], json!({"failure_reason": null}));

    // After it.
    let failed = s.wait_phase("tidy-1-dev", StagePhase::Failed).await;
    s.wait_cached(&failed, "FAILED").await;
    let page = eventually_json(
        "GoCD to show the cleanup job passed",
        T,
        || s.http.get(&history).basic_auth("admin", Some(PASSWORD)),
        |v| job(v, "report")["state"] == "Completed",
    )
    .await;
    assert_eq!(job(&page, "report")["result"], "Passed");
    assert_eq!(page["stages"][0]["result"], "Cancelled");
    let r = s.get(&format!("/v3/tasks/{guid}"), op).await;
    r.expect(200);
    assert_eq!(r.json()["state"], "FAILED");
    assert_eq!(
        r.json()["result"],
        json!({"failure_reason": "task was cancelled"})
    );
    let requests = s.cancel_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].spec.mode,
        CancelMode::Cancel,
        "a REST cancel is a Cancel"
    );
    let record = failed.status.unwrap().cancel.unwrap();
    assert_eq!(record.mode, CancelMode::Cancel);
}
