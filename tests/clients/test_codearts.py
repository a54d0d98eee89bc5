"""Huawei Cloud's own CodeArts Build SDK (huaweicloudsdkcodeartsbuild),
unmodified, against the sidecar: AK/SK-signed requests stop a build and read
its status and history.

Environment:
  CODEARTS_ENDPOINT   the sidecar's URL, e.g. http://127.0.0.1:8153
  CODEARTS_AK         an access key of the sidecar's users file (accessKeys)
  CODEARTS_SK         its secret key
  CODEARTS_JOB_ID     a pipeline with a running build
  CODEARTS_BUILD_NO   that build's number (pipelineCounter)
  CODEARTS_PROJECT_ID optional; the SDK sends it as X-Project-Id (default "cancel-operator")
"""

import os
import time

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcodeartsbuild.v3 import (
    CodeArtsBuildClient,
    ShowHistoryDetailsRequest,
    ShowJobStatusRequest,
    ShowListHistoryRequest,
    StopJobRequest,
    StopJobRequestBody,
)


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        pytest.skip(f"{name} is not set")
    return value


def client(ak=None, sk=None):
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    credentials = BasicCredentials(
        ak or env("CODEARTS_AK"),
        sk or env("CODEARTS_SK"),
        env("CODEARTS_PROJECT_ID", "cancel-operator"),
    )
    return (
        CodeArtsBuildClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoints([env("CODEARTS_ENDPOINT")])
        .build()
    )


def job_id():
    return env("CODEARTS_JOB_ID")


def build_no():
    return env("CODEARTS_BUILD_NO")


def status():
    return client().show_job_status(ShowJobStatusRequest(job_id=job_id())).result


def test_a_wrong_secret_key_is_refused():
    with pytest.raises(exceptions.ClientRequestException) as e:
        client(sk="not-the-secret-key-of-this-access-key").show_job_status(
            ShowJobStatusRequest(job_id=job_id())
        )
    assert e.value.status_code == 401
    assert e.value.error_code == "CB.00060210"


def test_stop_a_running_build_and_read_its_status():
    assert status() is True

    history = client().show_list_history(
        ShowListHistoryRequest(job_id=job_id(), offset=0, limit=10, interval=30)
    )
    numbers = [r.build_number for r in history.history_records]
    assert int(build_no()) in numbers
    assert history.total >= 1

    stopped = client().stop_job(
        StopJobRequest(body=StopJobRequestBody(job_id=job_id(), build_no=build_no()))
    )
    assert stopped.result is True

    deadline = time.monotonic() + 90
    while status() and time.monotonic() < deadline:
        time.sleep(1)
    assert status() is False

    details = client().show_history_details(
        ShowHistoryDetailsRequest(job_id=job_id(), build_number=int(build_no()))
    )
    assert details.build_number == int(build_no())
    assert details.build_steps
    assert all(step.status in ("success", "error", "") for step in details.build_steps)

    history = client().show_list_history(
        ShowListHistoryRequest(job_id=job_id(), offset=0, limit=10, interval=30)
    )
    record = next(r for r in history.history_records if r.build_number == int(build_no()))
    assert record.result == "ABORTED"

    # Stopping it again: it has finished.
    again = client().stop_job(
        StopJobRequest(body=StopJobRequestBody(job_id=job_id(), build_no=build_no()))
    )
    assert again.result is False
