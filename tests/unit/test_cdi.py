"""CDI: spec files (JSON and YAML) to OCI spec edits; unknown, ambiguous and malformed names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cri_shim.containers import cdi
from cri_shim.errors import InvalidArgument
from oci.builder import SpecBuilder, default_spec

NULL = os.stat("/dev/null")


def write_specs(root: Path) -> tuple[str, str]:
    etc, run = root / "etc-cdi", root / "run-cdi"
    etc.mkdir()
    run.mkdir()
    (etc / "vendor.json").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "vendor.example/widget",
        "containerEdits": {"env": ["WIDGET_DRIVER=1"]},
        "devices": [
            {"name": "null", "containerEdits": {
                "deviceNodes": [{"path": "/dev/widget0", "hostPath": "/dev/null"}],
                "env": ["WIDGET=null"]}},
            {"name": "zero", "containerEdits": {
                "deviceNodes": [{"path": "/dev/zero", "permissions": "rw"}],
                "mounts": [{"hostPath": str(root), "containerPath": "/opt/widget",
                            "options": ["ro", "rbind"]}],
                "hooks": [{"hookName": "createContainer", "path": "/bin/true", "args": ["true", "x"]}],
                "additionalGIDs": [4242]}},
            {"name": "overridden", "containerEdits": {"env": ["WHERE=etc"]}},
        ]}))
    (run / "vendor.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: vendor.example/widget\ndevices:\n"
        "  - name: overridden\n    containerEdits:\n      env: [WHERE=run]\n")
    (run / "twin-a.yaml").write_text("cdiVersion: 0.5.0\nkind: other.example/x\ndevices:\n  - name: twin\n")
    (run / "twin-b.json").write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "other.example/x",
                                                 "devices": [{"name": "twin"}]}))
    (run / "broken.yaml").write_text("cdiVersion: [unclosed\n")
    return str(etc), str(run)


def builder() -> SpecBuilder:
    return SpecBuilder(default_spec()).user(1000, 1000, [1000])


def test_device_nodes_env_mounts_hooks_gids(tmp_path: Path) -> None:
    reg = cdi.load(write_specs(tmp_path))
    b = builder()
    cdi.apply(b, ["vendor.example/widget=null", "vendor.example/widget=zero"], reg)
    spec = b.spec
    assert spec.linux and spec.process
    nodes = {d.path: d for d in spec.linux.devices or []}
    assert (nodes["/dev/widget0"].type, nodes["/dev/widget0"].major, nodes["/dev/widget0"].minor) == \
        ("c", os.major(NULL.st_rdev), os.minor(NULL.st_rdev))
    assert "/dev/zero" in nodes
    rules = [(r.type, r.major, r.minor, r.access) for r in spec.linux.resources.devices or []]  # type: ignore[union-attr]
    assert ("c", os.major(NULL.st_rdev), os.minor(NULL.st_rdev), "rwm") in rules
    assert any(r[3] == "rw" for r in rules)
    env = spec.process.env or []
    assert "WIDGET_DRIVER=1" in env and "WIDGET=null" in env
    assert env.count("WIDGET_DRIVER=1") == 1  # the spec's own edits once, however many devices
    mount = next(m for m in spec.mounts or [] if m.destination == "/opt/widget")
    assert mount.source == str(tmp_path) and mount.options == ["ro", "rbind"]
    assert spec.hooks and spec.hooks.create_container and spec.hooks.create_container[0].path == "/bin/true"
    assert 4242 in (spec.process.user.additional_gids or [])


def test_later_directory_wins(tmp_path: Path) -> None:
    reg = cdi.load(write_specs(tmp_path))
    b = builder()
    cdi.apply(b, ["vendor.example/widget=overridden"], reg)
    assert "WHERE=run" in (b.spec.process.env or [])  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "message"), [
    ("vendor.example/widget=nope", "'vendor.example/widget=nope' is not defined"),
    ("other.example/x=twin", "is ambiguous: defined in"),
    ("widget", "is not a qualified name"),
    ("Vendor/widget=x", "is not a qualified name"),
])
def test_refusals_name_the_device(tmp_path: Path, name: str, message: str) -> None:
    reg = cdi.load(write_specs(tmp_path))
    with pytest.raises(InvalidArgument, match=message) as info:
        cdi.apply(builder(), [name], reg)
    if "not defined" in message:
        assert "broken.yaml" in info.value.message  # the unreadable file is named too


def test_a_node_that_is_not_a_device(tmp_path: Path) -> None:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "x.json").write_text(json.dumps({"cdiVersion": "0.6.0", "kind": "a.example/b", "devices": [
        {"name": "file",
         "containerEdits": {"deviceNodes": [{"path": "/dev/x", "hostPath": "/etc/hostname"}]}}]}))
    with pytest.raises(InvalidArgument, match="is not a device node"):
        cdi.apply(builder(), ["a.example/b=file"], cdi.load([str(d)]))
    assert cdi.load([str(tmp_path / "missing")]).devices == {}
