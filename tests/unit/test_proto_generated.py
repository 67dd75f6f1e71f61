"""The committed generated stubs must match what hack/gen-proto.sh produces now."""

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "cri_shim" / "criapi"


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "hack" / "gen-proto.sh"), str(tmp_path)], check=True)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["__init__.py", "api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"]
    stale = [n for n in names if not filecmp.cmp(tmp_path / n, GENERATED / n, shallow=False)]
    assert not stale, f"stale generated modules {stale}: run hack/gen-proto.sh"


def test_services_are_complete() -> None:
    from cri_shim.criapi import api_pb2

    runtime = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    image = api_pb2.DESCRIPTOR.services_by_name["ImageService"]
    # v0.36 has 35 runtime and 6 image RPCs; a shrinking count means a lost method.
    assert len(runtime.methods) >= 35
    assert {m.name for m in image.methods} == {
        "ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo", "StreamImages",
    }
