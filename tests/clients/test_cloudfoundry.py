"""The python cloudfoundry-client, unmodified, against the sidecar.

Only the target URL and a token are given, through the client's own API:
`CloudFoundryClient(url)` reads the root document, and `init_with_token`
exchanges the token at the `login` link's `/oauth/token`. Driven by
tests/clients.rs, which sets:

  CF_API_URL          the sidecar's base URL
  CF_TOKEN            a Kubernetes bearer token allowed to read and cancel
  CF_TASK_GUID        the task to find and cancel (RUNNING)
  CF_TASK_SEQUENCE_ID its sequence id
  CF_LABEL_SELECTOR   a selector that matches it and other tasks
"""

import os
import time

import pytest
from cloudfoundry_client.client import CloudFoundryClient
from cloudfoundry_client.errors import InvalidStatusCode

API_URL = os.environ["CF_API_URL"]
TOKEN = os.environ["CF_TOKEN"]
GUID = os.environ["CF_TASK_GUID"]
SEQUENCE_ID = int(os.environ["CF_TASK_SEQUENCE_ID"])
SELECTOR = os.environ["CF_LABEL_SELECTOR"]

DEADLINE_SECONDS = 90


@pytest.fixture(scope="module")
def client():
    c = CloudFoundryClient(API_URL)
    c.init_with_token(TOKEN)
    return c


def test_the_client_discovers_v3_from_the_root(client):
    assert client.info.api_v3_url == API_URL + "/v3"
    assert client.info.api_v2_url is None
    assert client.info.authorization_endpoint == API_URL


def test_the_task_is_found_by_filters_across_pages(client):
    # per_page=1 makes the client follow `pagination.next` links.
    found = list(
        client.v3.tasks.list(
            states=["RUNNING", "PENDING"], label_selector=SELECTOR, per_page=1
        )
    )
    guids = [t["guid"] for t in found]
    assert GUID in guids
    assert len(guids) == len(set(guids)) >= 2
    by_sequence = list(
        client.v3.tasks.list(label_selector=SELECTOR, guids=[GUID], order_by="-created_at")
    )
    assert [t["sequence_id"] for t in by_sequence] == [SEQUENCE_ID]
    assert client.v3.tasks.get(GUID)["state"] == "RUNNING"


def test_the_clients_cancel_fails_the_task(client):
    task = client.v3.tasks.cancel(GUID)
    assert task["guid"] == GUID
    assert task["state"] == "CANCELING"
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        task = client.v3.tasks.get(GUID)
        if task["state"] == "FAILED":
            break
        assert time.monotonic() < deadline, f"still {task['state']}"
        time.sleep(0.5)
    assert task["result"]["failure_reason"] == "task was cancelled"
    with pytest.raises(InvalidStatusCode) as refused:
        client.v3.tasks.cancel(GUID)
    assert refused.value.status_code == 422
    assert refused.value.body["errors"][0]["title"] == "CF-UnprocessableEntity"


def test_errors_come_back_as_the_clients_errors(client):
    with pytest.raises(InvalidStatusCode) as missing:
        client.v3.tasks.get("00000000-0000-0000-0000-000000000000")
    assert missing.value.status_code == 404
    assert missing.value.body["errors"][0]["code"] == 10010
    with pytest.raises(InvalidStatusCode) as bad:
        list(client.v3.tasks.list(per_page=0))
    assert bad.value.status_code == 400
    assert bad.value.body["errors"][0]["title"] == "CF-BadQueryParameter"
