"""Prints AK/SK signing test vectors made by Huawei Cloud's own SDK signer.

The Python vectors in src/sidecar/aksk.rs (`vectors`) are this script's output:

    python3 -m venv /tmp/aksk-venv
    /tmp/aksk-venv/bin/pip install huaweicloudsdkcore==3.1.219
    /tmp/aksk-venv/bin/python tests/clients/aksk_vectors.py

Each request is signed with a fixed X-Sdk-Date, so the output never changes.
"""

import json

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

AK = "QTWAOYTTINDUT2QVKYUC"
SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
DATE = "20260102T030405Z"
HOST = "127.0.0.1:8153"

REQUESTS = [
    # name, method, path, query params, body, content type
    ("stop", "POST", "/v3/jobs/stop", [],
     b'{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "20"}', "application/json"),
    ("status", "GET", "/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/status", [], b"", "application/json"),
    ("history", "GET", "/v3/jobs/demo/history",
     [("offset", 0), ("limit", 10), ("interval", 30)], b"", "application/json"),
    ("encoded", "POST", "/v3/jobs/my%20job/3/stop",
     [("b", "x y"), ("a", "é~*")], b"", "application/json"),
]

for name, method, path, query, body, content_type in REQUESTS:
    headers = {"Content-Type": content_type, "X-Sdk-Date": DATE, "User-Agent": "huaweicloud-usdk-python/3.0"}
    request = SdkRequest(method=method, schema="http", host=HOST, resource_path=path,
                         query_params=list(query), header_params=headers, body=body)
    signed = Signer(BasicCredentials(AK, SK, "project")).sign(request)
    print(json.dumps({
        "name": name,
        "method": method,
        "uri": signed.uri,
        "headers": signed.header_params,
        "body": body.decode(),
    }))
