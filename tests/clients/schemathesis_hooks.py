"""Schemathesis hooks for tests/schemathesis.rs: Huawei Cloud AK/SK signing.

CodeArts operations list `akSk` first among their security schemes, so
schemathesis puts the configured placeholder `Authorization` value on their
requests. Such a request is signed here, after it has been prepared (its
path, query and body are the bytes sent), by Huawei Cloud's own SDK signer,
with the access key and secret key from SCHEMATHESIS_AK and SCHEMATHESIS_SK.
A request carrying anything else in `Authorization` (schemathesis' probes
with no or invalid credentials, other schemes) is sent as it is.

Each signed request also signs a fresh `X-Request-Id`, so that a request
schemathesis sends twice is not a replay of the same signature.
"""

import os
import uuid
from urllib.parse import parse_qsl, urlsplit

import requests
import schemathesis
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

# The value schemathesis.toml gives the akSk scheme: "sign this request".
PLACEHOLDER = "SDK-HMAC-SHA256 unsigned"


class AkSk(requests.auth.AuthBase):
    def __init__(self, ak: str, sk: str):
        self.signer = Signer(BasicCredentials(ak, sk, "project"))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if r.headers.get("Authorization") != PLACEHOLDER:
            return r
        url = urlsplit(r.url)
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        sdk = SdkRequest(
            method=r.method,
            schema=url.scheme,
            host=url.netloc,
            resource_path=url.path,
            query_params=parse_qsl(url.query, keep_blank_values=True),
            header_params={"X-Request-Id": str(uuid.uuid4())},
            body=body,
        )
        signed = self.signer.sign(sdk)
        for name in ("Authorization", "X-Sdk-Date", "X-Request-Id"):
            r.headers[name] = signed.header_params[name]
        return r


AUTH = AkSk(os.environ["SCHEMATHESIS_AK"], os.environ["SCHEMATHESIS_SK"])


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = AUTH
