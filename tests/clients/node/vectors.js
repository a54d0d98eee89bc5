// Prints AK/SK signing test vectors made by Huawei Cloud's Node.js SDK core
// (the version package-lock.json pins): each request is built and signed by
// the core's HcClient as test_codearts.js sends it, with a fixed X-Sdk-Date
// so that the output never changes. The Node.js vectors in
// src/sidecar/aksk.rs are this script's output:
//
//   cd tests/clients/node && npm ci && node vectors.js
"use strict";

// The core's DefaultHttpClient sends the query as querystring.stringify makes it.
const querystring = require("node:querystring");
const { ClientBuilder } = require("@huaweicloud/huaweicloud-sdk-core/ClientBuilder");
const { BasicCredentials } = require("@huaweicloud/huaweicloud-sdk-core/auth/BasicCredentials");

const AK = "QTWAOYTTINDUT2QVKYUC";
const SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc";
const DATE = "20260102T030405Z";
const HOST = "127.0.0.1:8153";

const REQUESTS = [
  ["stop", "POST", "/v3/jobs/stop", {}, {},
    { job_id: "f9d6c8466d614a9788e9a0acf6c15f46", build_no: "20" }],
  ["status", "GET", "/v3/jobs/{job_id}/status", { job_id: "f9d6c8466d614a9788e9a0acf6c15f46" }, {}],
  ["history", "GET", "/v3/jobs/{job_id}/history", { job_id: "demo" },
    { offset: 0, limit: 10, interval: 30 }],
  ["encoded", "POST", "/v3/jobs/{job_id}/{build_no}/stop", { job_id: "my-job", build_no: "3" },
    { b: "x y", a: "é~*" }, {}],
];

async function main() {
  const credentials = new BasicCredentials().withAk(AK).withSk(SK).withProjectId("cancel-operator");
  const hc = new ClientBuilder((c) => c).withCredential(credentials).withEndpoint(`http://${HOST}`).build();
  for (const [name, method, url, pathParams, queryParams, data] of REQUESTS) {
    const options = {
      method, url, contentType: "application/json", queryParams, pathParams,
      headers: { "X-Sdk-Date": DATE },
    };
    if (data !== undefined) {
      options.data = data;
    }
    const request = await hc.buildRequest(options);
    const sent = new URL(request.endpoint);
    const query = querystring.stringify(request.queryParams);
    console.log(JSON.stringify({
      name,
      method: request.method,
      path: sent.pathname,
      query,
      headers: request.headers,
      body: request.data === undefined ? "" : JSON.stringify(request.data),
    }));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
