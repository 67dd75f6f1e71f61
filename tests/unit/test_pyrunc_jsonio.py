"""pyrunc's JSON without the json package: the same text and the same values as json, and json's
own errors for what it refuses; and no pyrunc command imports json, re or enum."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oci.pyrunc import jsonio

REPO = Path(__file__).resolve().parents[2]

VALUES = [
    {}, [], "", 0, -1, 2**70, 1.5, -0.0, 1e300, True, False, None, "é\u2028\"\\\n\x00\U0001f600",
    {"ociVersion": "1.2.0", "id": "c1", "pid": 42, "status": "running", "bundle": "/b", "rootfs": "/b/rootfs",
     "created": "2026-01-01T00:00:00.000000000Z", "owner": "", "annotations": {}},
    {"a": [1, [2, []], {"b": {}}], "c": [{"d": None}], "ü": "ß", "e": (1, 2)},
    {"nested": {"deep": [[[[]]], {"x": [True, False, None, 0.1]}]}},
    [float("nan"), float("inf"), float("-inf")],
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("kwargs", [{}, {"indent": 2}, {"indent": 4}, {"separators": (",", ":")},
                                    {"indent": 2, "separators": (",", ": ")}])
def test_dumps_is_jsons_text(value: object, kwargs: dict) -> None:
    assert jsonio.dumps(value, **kwargs) == json.dumps(value, **kwargs)


@pytest.mark.parametrize("value", [{1: "int key"}, {None: 1, True: 2}, {"k": {2.5: []}}, [{"x": {3: 4}}]])
@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_of_what_json_converts(value: object, indent: int | None) -> None:
    assert jsonio.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@pytest.mark.parametrize("value", [{"s": {1, 2}}, [object()], {"b": b"x"}])
@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_refuses_what_json_refuses(value: object, indent: int | None) -> None:
    with pytest.raises(TypeError) as ours:
        jsonio.dumps(value, indent=indent)
    with pytest.raises(TypeError) as theirs:
        json.dumps(value, indent=indent)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_circular(indent: int | None) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonio.dumps(loop, indent=indent)


@pytest.mark.parametrize("text", [json.dumps(v) for v in VALUES] + [
    ' \n\t{"a" : [1 , 2.5e3, -0, "\\u00e9\\ud83d\\ude00"]}\r\n ', "NaN", "-Infinity", "[Infinity]", "1E5",
    '"tab\\tand\\/"', "  7  "])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_loads_is_jsons_value(text: str, as_bytes: bool) -> None:
    data: str | bytes = text.encode() if as_bytes else text
    ours, theirs = jsonio.loads(data), json.loads(data)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf{\"bom\": 1}", '{"x": 1}'.encode("utf-16")])
def test_loads_other_encodings_as_json(data: bytes) -> None:
    assert jsonio.loads(data) == json.loads(data)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', "[1,]", '{"a" 1}', "nul", '"\x01"', "\xff",
                                  '{"a": 1}{', "01"])
def test_loads_errors_are_jsons(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        jsonio.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_bad_utf8_bytes_fail_as_in_json() -> None:
    with pytest.raises(UnicodeDecodeError):
        jsonio.loads(b'{"a": "\xff"}')


def _run_probe(argv: list[str], root: Path) -> tuple[int, list[str]]:
    """Run pyrunc's main with argv; return its exit code and which start-up-costly modules it
    had imported when it ended (the command ends in posix._exit, which the probe replaces to look
    at sys.modules first; the probe itself imports nothing but posix and sys)."""
    r, w = os.pipe()
    probe = ("import posix, sys\n"
             f"sys.path.insert(0, {str(REPO)!r})\n"
             f"sys.argv = ['pyrunc', '--root', {str(root)!r}, *{argv!r}]\n"
             "real_exit = posix._exit\n"
             "def report(code):\n"
             "    heavy = ('json', 're', 'enum', 'typing', 'dataclasses', 'inspect', 'os', '__future__',\n"
             "             'ctypes')\n"
             f"    posix.write({w}, repr((code, sorted(m for m in heavy if m in sys.modules))).encode())\n"
             "    real_exit(code)\n"
             "posix._exit = report\n"
             "from oci.pyrunc.cli import main\n"
             "main()\n")
    subprocess.run([sys.executable, "-I", "-S", "-c", probe], pass_fds=(w,), capture_output=True, timeout=30)
    os.close(w)
    with os.fdopen(r) as f:
        code, heavy = ast.literal_eval(f.read())
    return code, heavy


@pytest.mark.parametrize("argv", [["--version"], ["state", "nosuch"], ["delete", "nosuch"], ["start", "x"],
                                  ["kill", "x", "KILL"], ["exec", "x", "true"], ["list"], ["features"],
                                  ["create", "--bundle", "/nonexistent", "x"]])
def test_no_command_imports_json_re_or_enum(argv: list[str], tmp_path: Path) -> None:
    """The modules that cost ~10 ms per command (json, re, enum, typing), and os (~2 ms), stay
    out of every verb's start-up."""
    _, heavy = _run_probe(argv, tmp_path)
    assert heavy == []


def test_no_pyrunc_module_imports_os_or_ctypes() -> None:
    """Everything create, exec and the init run is on posix: os would cost ~2 ms before create's
    fork and again in exec. Only what a terminal needs (console: socket imports os) and the
    hooks (subprocess) bring it in, when a container has them. libc loaded, the ctypes package
    (~4 ms more than _ctypes, which ffi.py is built on) is not there either."""
    modules = sorted(p.stem for p in (REPO / "oci" / "pyrunc").glob("*.py")
                     if p.stem not in ("__init__", "__main__", "console"))
    probe = ("import sys\n"
             f"sys.path.insert(0, {str(REPO)!r})\n"
             f"for m in {modules!r}: __import__('oci.pyrunc.' + m)\n"
             "import oci.atomic_file\n"
             "from oci.pyrunc import syscalls\n"
             "syscalls.load()\n"
             "costly = ('os', 'posixpath', '_collections_abc', 'subprocess', 'ctypes')\n"
             "print(sorted(m for m in costly if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "create" in modules and "init" in modules and "exec" in modules
    assert out.stdout.strip() == "[]"


def _stopped_container(root: Path, cid: str) -> Path:
    """A container whose init is gone, with v1 cgroup directories under root (no cgroupfs)."""
    cg = root / "cgroup" / cid
    cg.mkdir(parents=True)
    (root / cid).mkdir(parents=True)
    (root / cid / "state.json").write_text(json.dumps({
        "id": cid, "pid": 2**22 + 1, "pid_start": 1, "bundle": str(root), "rootfs": str(root / "rootfs"),
        "created": "2026-01-01T00:00:00.000000000Z", "annotations": {},
        "cgroups": {"mode": "v1", "paths": {"memory": str(cg), "freezer": str(cg)}}, "config": {}}))
    return cg


@pytest.mark.parametrize("argv, code", [
    (["state", "c1"], 0), (["start", "c1"], 1), (["kill", "c1", "KILL"], 1),
    (["kill", "--all", "c1", "TERM"], 1), (["pause", "c1"], 1), (["list"], 0),
    (["delete", "c1"], 0), (["delete", "--force", "c1"], 0),
    (["state", "nosuch"], 1), (["delete", "nosuch"], 1), (["delete", "--force", "nosuch"], 0)])
def test_short_commands_never_import_os(argv: list[str], code: int, tmp_path: Path) -> None:
    """state, start, kill, pause, list and delete, which conmon and cri-shim run several times per
    container, run on posix alone (importing os costs ~2 ms per command) and without __future__
    (0.5 ms: pyrunc quotes the annotations that name typing-only names instead). Each runs to
    its end here (a stopped container: delete removes its state and cgroups, the others refuse)."""
    cg = _stopped_container(tmp_path, "c1")
    got, heavy = _run_probe(argv, tmp_path)
    assert (got, heavy) == (code, [])
    if argv[0] == "delete" and "c1" in argv:
        assert not (tmp_path / "c1").exists() and not cg.exists()
