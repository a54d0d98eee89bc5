// Huawei Cloud's Node.js SDK core (@huaweicloud/huaweicloud-sdk-core),
// unmodified, against the sidecar: AK/SK-signed requests stop a build and
// read its status and history. The same steps as ../test_codearts.py; it
// exits non-zero at the first step that fails.
//
// The service package @huaweicloud/huaweicloud-sdk-codeartsbuild is not
// published on npm, so `CodeArtsBuild` below makes the calls its generated
// CodeArtsBuildClient makes (huaweicloud-sdk-nodejs-v3,
// services/codeartsbuild/v3/CodeArtsBuildClient.ts): the same request
// options handed to the core's HcClient.sendRequest, which builds, signs
// and sends the request.
//
// Environment: CODEARTS_ENDPOINT, CODEARTS_AK, CODEARTS_SK, CODEARTS_JOB_ID,
// CODEARTS_BUILD_NO, and optionally CODEARTS_PROJECT_ID (sent as
// X-Project-Id, default "cancel-operator").
"use strict";

const assert = require("node:assert/strict");
const { ClientBuilder } = require("@huaweicloud/huaweicloud-sdk-core/ClientBuilder");
const { BasicCredentials } = require("@huaweicloud/huaweicloud-sdk-core/auth/BasicCredentials");

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

// The generated client's request options, call for call.
class CodeArtsBuild {
  constructor(hcClient) {
    this.hcClient = hcClient;
  }

  static newBuilder() {
    return new ClientBuilder((hcClient) => new CodeArtsBuild(hcClient));
  }

  send(options) {
    options.responseHeaders = [""];
    return this.hcClient.sendRequest(options);
  }

  stopJob(jobId, buildNo) {
    return this.send({
      method: "POST",
      url: "/v3/jobs/stop",
      contentType: "application/json",
      queryParams: {},
      pathParams: {},
      headers: { "Content-Type": "application/json" },
      data: { job_id: jobId, build_no: buildNo },
    });
  }

  showJobStatus(jobId) {
    return this.send({
      method: "GET",
      url: "/v3/jobs/{job_id}/status",
      contentType: "application/json",
      queryParams: {},
      pathParams: { job_id: jobId },
      headers: {},
    });
  }

  showListHistory(jobId, offset, limit, interval) {
    return this.send({
      method: "GET",
      url: "/v3/jobs/{job_id}/history",
      contentType: "application/json",
      queryParams: { offset, limit, interval },
      pathParams: { job_id: jobId },
      headers: {},
    });
  }

  showHistoryDetails(jobId, buildNumber) {
    return this.send({
      method: "GET",
      url: "/v3/jobs/{job_id}/{build_number}/history-details",
      contentType: "application/json",
      queryParams: {},
      pathParams: { job_id: jobId, build_number: buildNumber },
      headers: {},
    });
  }
}

function client(sk) {
  const credentials = new BasicCredentials()
    .withAk(env("CODEARTS_AK"))
    .withSk(sk)
    .withProjectId(env("CODEARTS_PROJECT_ID", "cancel-operator"));
  return CodeArtsBuild.newBuilder()
    .withCredential(credentials)
    .withEndpoint(env("CODEARTS_ENDPOINT"))
    .build();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const c = client(env("CODEARTS_SK"));
  const jobId = env("CODEARTS_JOB_ID");
  const buildNo = env("CODEARTS_BUILD_NO");
  const number = Number(buildNo);

  // A wrong secret key is refused.
  await assert.rejects(
    client("not-the-secret-key-of-this-access-key").showJobStatus(jobId),
    (e) => e.httpStatusCode === 401 && e.errorCode === "CB.00060210",
    "a wrong secret key: want 401 CB.00060210",
  );

  const status = async () => (await c.showJobStatus(jobId)).result;
  const history = () => c.showListHistory(jobId, 0, 10, 30);
  const record = (h) => (h.history_records ?? []).find((r) => r.build_number === number);

  assert.equal(await status(), true, "the build is not running");
  let h = await history();
  assert.ok(record(h), `history lacks build ${number}: ${JSON.stringify(h)}`);
  assert.ok(h.total >= 1, `history total: ${JSON.stringify(h)}`);

  assert.equal((await c.stopJob(jobId, buildNo)).result, true, "stopping a running build");
  const deadline = Date.now() + 90_000;
  while ((await status()) && Date.now() < deadline) {
    await sleep(1000);
  }
  assert.equal(await status(), false, "the build still runs after it was stopped");

  const details = await c.showHistoryDetails(jobId, number);
  assert.equal(details.build_number, number, JSON.stringify(details));
  assert.ok(details.build_steps?.length > 0, JSON.stringify(details));
  for (const step of details.build_steps) {
    assert.ok(["success", "error", ""].includes(step.status), JSON.stringify(step));
  }

  h = await history();
  assert.equal(record(h)?.result, "ABORTED", JSON.stringify(h));

  // Stopping it again: it has finished.
  assert.equal((await c.stopJob(jobId, buildNo)).result, false, "stopping a finished build");
  console.log("ok: the Node.js SDK stopped the build and read its status, history and details");
}

main().catch((e) => {
  console.error("FAIL:", e);
  process.exit(1);
});
