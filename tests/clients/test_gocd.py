"""GoCD's published Python clients, unmodified, against the sidecar: py-gocd
(package gocd) and yagocd read stage and pipeline history and stage
instances, and cancel a running stage, with nothing but the server URL and
Basic credentials.

Environment:
  GOCD_URL          the sidecar's URL, e.g. http://127.0.0.1:8153
  GOCD_USER         a user of the sidecar's users file with cancel rights
  GOCD_PASSWORD     its password
  PYGOCD_PIPELINE   a pipeline whose stage PYGOCD_STAGE is running, for py-gocd
  PYGOCD_STAGE
  PYGOCD_COUNTER    its pipeline counter
  YAGOCD_PIPELINE   the same for yagocd (another pipeline: each test cancels
  YAGOCD_STAGE      the stage it is given)
  YAGOCD_COUNTER
"""

import json
import os
import time

import gocd
import pytest
from yagocd import Yagocd
from yagocd.exception import RequestError
from yagocd.resources.stage import StageResult

CANCELLED = "Stage cancelled successfully."
NOT_ACTIVE = "Stage is not active. Cancellation Ignored."


def env(name):
    value = os.environ.get(name)
    if value is None:
        pytest.skip(f"{name} is not set")
    return value


def eventually(check, what, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


# py-gocd: urllib with a Basic auth handler, which answers the server's
# challenge; legacy routes, plain-text messages.


def pygocd_server(password=None):
    return gocd.Server(
        env("GOCD_URL"), env("GOCD_USER"), password or env("GOCD_PASSWORD")
    )


def test_pygocd_a_wrong_password_is_refused():
    stage = pygocd_server(password="not-the-password").stage(
        env("PYGOCD_PIPELINE"), env("PYGOCD_STAGE")
    )
    response = stage.history()
    assert not response
    assert response.status_code == 401


def test_pygocd_cancels_a_running_stage():
    pipeline, stage_name = env("PYGOCD_PIPELINE"), env("PYGOCD_STAGE")
    counter = int(env("PYGOCD_COUNTER"))
    stage = pygocd_server().stage(pipeline, stage_name)

    history = stage.history()
    assert history.is_ok, history.payload
    mine = [
        s for s in history["stages"] if int(s["pipeline_counter"]) == counter
    ]
    assert len(mine) == 1
    assert mine[0]["name"] == stage_name
    assert mine[0]["pipeline_name"] == pipeline
    assert mine[0]["result"] == "Unknown"

    # The latest instance, found through the pipeline's history.
    instance = stage.instance()
    assert instance.is_ok, instance.payload
    assert int(instance["pipeline_counter"]) == counter
    assert instance["result"] == "Unknown"
    stage_counter = int(instance["counter"])

    cancelled = stage.cancel()
    assert cancelled.is_ok, cancelled.payload
    assert cancelled.payload.decode().strip() == CANCELLED

    by_counters = pygocd_server().stage(pipeline, stage_name, pipeline_counter=counter)

    def is_cancelled():
        r = by_counters.instance(counter=stage_counter)
        assert r.is_ok, r.payload
        return r if r["result"] == "Cancelled" else None

    final = eventually(is_cancelled, "the stage cancelled")
    assert final["name"] == stage_name
    assert all(job["result"] == "Cancelled" for job in final["jobs"])

    # Cancelling it again: GoCD ignores it, successfully.
    again = stage.cancel()
    assert again.is_ok, again.payload
    assert again.payload.decode().strip() == NOT_ACTIVE

    history = stage.history()
    record = next(
        s for s in history["stages"] if int(s["pipeline_counter"]) == counter
    )
    assert record["result"] == "Cancelled"


# yagocd: requests with Basic auth on every call; it reads the server version
# from /go/about before its first API call.


def yagocd_client(password=None):
    return Yagocd(
        server=env("GOCD_URL"),
        auth=(env("GOCD_USER"), password or env("GOCD_PASSWORD")),
    )


def test_yagocd_a_wrong_password_is_refused():
    with pytest.raises(RequestError) as e:
        yagocd_client(password="not-the-password").stages.history(
            pipeline_name=env("YAGOCD_PIPELINE"), stage_name=env("YAGOCD_STAGE")
        )
    assert e.value.response.status_code == 401


def test_yagocd_reads_the_server_version():
    version = yagocd_client().info.version
    assert version
    assert version.split(".")[0].isdigit()


def test_yagocd_cancels_a_running_stage():
    pipeline, stage_name = env("YAGOCD_PIPELINE"), env("YAGOCD_STAGE")
    counter = int(env("YAGOCD_COUNTER"))
    go = yagocd_client()

    history = go.stages.history(pipeline_name=pipeline, stage_name=stage_name)
    mine = [s for s in history if int(s.pipeline_counter) == counter]
    assert len(mine) == 1
    assert mine[0].pipeline_name == pipeline
    assert mine[0].data.result == StageResult.Unknown
    stage_counter = mine[0].stage_counter

    pipelines = go.pipelines.history(pipeline)
    run = next(p for p in pipelines if int(p.data.counter) == counter)
    assert run.stage(stage_name) is not None
    assert go.pipelines.get(pipeline, counter).data.counter == counter

    instance = go.stages.get(
        pipeline_name=pipeline,
        pipeline_counter=counter,
        stage_name=stage_name,
        stage_counter=stage_counter,
    )
    assert instance.stage_name == stage_name
    assert instance.data.result == StageResult.Unknown
    assert [job.data.name for job in instance.jobs()]

    answer = go.stages.cancel(pipeline_name=pipeline, stage_name=stage_name)
    assert json.loads(answer) == {"message": CANCELLED}

    def is_cancelled():
        s = go.stages.get(
            pipeline_name=pipeline,
            pipeline_counter=counter,
            stage_name=stage_name,
            stage_counter=stage_counter,
        )
        return s if s.data.result == StageResult.Cancelled else None

    final = eventually(is_cancelled, "the stage cancelled")
    assert int(final.pipeline_counter) == counter

    # The stage instance cancels itself again: not active any more.
    answer = final.cancel()
    assert json.loads(answer) == {"message": NOT_ACTIVE}
