"""Broken bundles give a clear error and leave nothing behind; `features` describes the runtime."""

from __future__ import annotations

import json
import shutil

import pytest

from oci.errors import ContainerNotFound, RuntimeFailure
from tests.conformance.conftest import Harness

pytestmark = pytest.mark.root


def _create_broken(h: Harness, mutate: str) -> RuntimeFailure:
    """Create a container from a bundle broken in one way; return the error the runtime gave."""
    c_spec = h.spec("true").build(check=False).to_dict()
    bundle = h.tmp / f"broken-{mutate}"
    bundle.mkdir()
    shutil.copytree(h.rootfs_template, bundle / "rootfs", symlinks=True)
    text: str
    if mutate == "missing-rootfs":
        c_spec["root"]["path"] = "does-not-exist"
        text = json.dumps(c_spec)
    elif mutate == "unknown-namespace":
        c_spec["linux"]["namespaces"].append({"type": "bogus"})
        text = json.dumps(c_spec)
    elif mutate == "mount-without-destination":
        c_spec["mounts"].append({"type": "tmpfs", "source": "tmpfs"})
        text = json.dumps(c_spec)
    elif mutate == "malformed-json":
        text = json.dumps(c_spec)[:-20]
    else:
        raise AssertionError(mutate)
    (bundle / "config.json").write_text(text)
    cid = f"broken-{mutate}"
    with pytest.raises(RuntimeFailure) as info:
        h.rt.create(cid, bundle)
    with pytest.raises(ContainerNotFound):
        h.rt.state(cid)
    assert str(bundle) not in open("/proc/self/mountinfo").read()
    return info.value


@pytest.mark.parametrize("mutate", ["missing-rootfs", "unknown-namespace", "mount-without-destination",
                                    "malformed-json"])
def test_broken_bundle_is_refused_cleanly(h: Harness, mutate: str) -> None:
    err = _create_broken(h, mutate)
    assert err.runtime_message, "the runtime gave no message"
    assert err.exit_code not in (None, 0)


@pytest.mark.known_failure("crun", "crun 1.8 has no `features` command")
def test_features(h: Harness) -> None:
    features = h.rt.features()
    assert features["ociVersionMin"].startswith("1.")
    assert "createContainer" in features["hooks"]
    assert "bind" in features["mountOptions"] or "rbind" in features["mountOptions"]
    assert set(features["linux"]["namespaces"]) >= {"pid", "network", "mount", "ipc", "uts"}
