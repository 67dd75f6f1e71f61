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
    with logs.about(**logs.ids_of(request)), logs.about(pod_id="p1"):
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
    assert logs.ids_of(pb.CreateContainerRequest(pod_sandbox_id="p")) == {"pod_id": "p"}
    assert logs.ids_of(pb.ExecSyncRequest(container_id="c")) == {"container_id": "c"}
    assert logs.ids_of(pb.VersionRequest()) == {}


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
    from cri_shim.server.interceptor import answer_now

    logs.setup("info", "json", captured)
    seen: list[tuple[str, str]] = []
    request = pb.StopContainerRequest(container_id="c" * 64)
    reply, answering = answer_now(lambda r, c: "done", "StopContainer",
                                  lambda m, code, s: seen.append((m, code)), request, None)
    assert reply == "done" and seen == []  # nothing counted before the answer is out
    answering.answered()
    assert seen == [("StopContainer", "OK")]
    [line] = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert line["msg"].startswith("StopContainer ok in") and line["container_id"] == "c" * 64
