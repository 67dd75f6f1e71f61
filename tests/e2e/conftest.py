"""Shared e2e fixtures. Feature-specific fixtures live in their own modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cni_fixtures import test_network  # noqa: F401 - shared fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import cri  # noqa: F401 - shared fixture
from tests.support.registry import busybox_image, registry  # noqa: F401 - shared fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:
    """Make DaemonProcess objects under tmp_path; every one is stopped at teardown."""
    made: list[DaemonProcess] = []

    def make(config_text: str = "", name: str = "d", start: bool = True) -> DaemonProcess:
        base = tmp_path / name
        base.mkdir(parents=True, exist_ok=True)
        d = DaemonProcess(base, config_text)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def daemon(daemon_factory) -> DaemonProcess:
    return daemon_factory()


@pytest.fixture(autouse=True)
def _needs_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.fail("this test needs root (namespaces, mounts, cgroups)")
