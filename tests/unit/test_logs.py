"""Logs an operator can use: JSON lines with the request's ids, the level switched at runtime."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from cri_shim import logs
from cri_shim.criapi import api_pb2 as pb


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("cri_shim").level
    yield out
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("cri_shim").setLevel(saved[2])


def test_json_lines_carry_the_requests_ids(captured: io.StringIO) -> None:
    logs.setup("info", "json", captured)
    log = logging.getLogger("cri_shim.test")
    request = pb.StopContainerRequest(container_id="c" * 64)
    with logs.about(**dict(logs.request_ids(request))), logs.about(pod_id="p1"):
        log.info("stopping %s", "it")

        async def later() -> None:  # a task started inside inherits the ids
            log.warning("from a task")
        asyncio.run(later())
    log.info("outside")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert lines[0]["msg"] == "stopping it" and lines[0]["level"] == "info"
    assert lines[0]["container_id"] == "c" * 64 and lines[0]["pod_id"] == "p1"
    assert lines[0]["logger"] == "cri_shim.test" and lines[0]["time"].endswith("Z")
    assert lines[1]["msg"] == "from a task" and lines[1]["pod_id"] == "p1"
    assert "pod_id" not in lines[2] and "container_id" not in lines[2]


def test_ids_of_requests() -> None:
    assert dict(logs.request_ids(pb.CreateContainerRequest(pod_sandbox_id="p"))) == {"pod_id": "p"}
    assert dict(logs.request_ids(pb.ExecSyncRequest(container_id="c"))) == {"container_id": "c"}
    assert dict(logs.request_ids(pb.VersionRequest())) == {}


def test_sigusr1_toggles_debug(captured: io.StringIO) -> None:
    logs.setup("info", "text", captured)
    ours = logging.getLogger("cri_shim")
    assert ours.level == logging.INFO
    logs.toggle_debug()
    assert ours.level == logging.DEBUG
    logs.toggle_debug()
    assert ours.level == logging.INFO
    assert "log level now debug (SIGUSR1)" in captured.getvalue()


def test_bad_format() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.setup("info", "xml")


def test_the_ok_line_written_after_the_answer_carries_the_requests_ids(captured: io.StringIO) -> None:
    """The server logs and counts a successful call once its answer is written, outside the
    call; the line still names the call's pod and container."""
    from cri_shim.server.interceptor import answer_now, succeeded

    logs.setup("info", "json", captured)
    seen: list[tuple[str, str]] = []

    def observe(m: str, code: str, s: float) -> None:
        seen.append((m, code))

    request = pb.StopContainerRequest(container_id="c" * 64)
    reply, seconds, ids = answer_now(lambda r, c: "done", "StopContainer", observe, request, None)
    assert reply == "done" and seen == []  # nothing counted before the answer is out
    assert ids == (("container_id", "c" * 64),) and seconds >= 0
    succeeded("StopContainer", seconds, observe, ids)
    assert seen == [("StopContainer", "OK")]
    [line] = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert line["msg"].startswith("StopContainer ok in") and line["container_id"] == "c" * 64


def test_a_polled_call_logs_its_failure_with_its_ids_and_its_ok_line_at_debug(captured: io.StringIO) -> None:
    from cri_shim.errors import NotFound
    from cri_shim.server.interceptor import RPCFailure, answer_now, succeeded

    logs.setup("info", "json", captured)
    seen: list[tuple[str, str]] = []

    def observe(m: str, code: str, s: float) -> None:
        seen.append((m, code))

    def missing(request: object, context: object) -> None:
        logging.getLogger("cri_shim.test").warning("looking")  # inside: carries the ids
        raise NotFound("pod sandbox p1 not found")

    request = pb.PodSandboxStatusRequest(pod_sandbox_id="p1")
    with pytest.raises(RPCFailure) as failed:
        answer_now(missing, "PodSandboxStatus", observe, request, None)
    assert failed.value.message == "pod sandbox p1 not found"
    assert seen == [("PodSandboxStatus", "NOT_FOUND")]
    lines = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert [x["pod_id"] for x in lines] == ["p1", "p1"]  # the handler's line and the failure's
    assert "NOT_FOUND" in lines[1]["msg"]
    assert logs.request_ids(pb.VersionRequest()) == ()
    # the ids do not outlive the call
    logging.getLogger("cri_shim.test").warning("after")
    assert "pod_id" not in json.loads(captured.getvalue().splitlines()[-1])
    # the polled calls' ok line is DEBUG: not written at INFO, written at DEBUG with the ids
    succeeded("PodSandboxStatus", 0.001, observe, (("pod_id", "p1"),))
    assert len(captured.getvalue().splitlines()) == 3
    logs.setup("debug", "json", captured)
    succeeded("PodSandboxStatus", 0.001, observe, (("pod_id", "p1"),))
    last = json.loads(captured.getvalue().splitlines()[-1])
    assert last["msg"].startswith("PodSandboxStatus ok in") and last["pod_id"] == "p1"
