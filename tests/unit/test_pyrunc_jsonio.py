"""pyrunc's JSON without the json package: the same text and the same values as json, and json's
own errors for what it refuses; and no pyrunc command imports json, re or enum."""

from __future__ import annotations

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


@pytest.mark.parametrize("argv", [["--version"], ["state", "nosuch"], ["delete", "nosuch"], ["start", "x"],
                                  ["kill", "x", "KILL"], ["exec", "x", "true"], ["list"], ["features"]])
def test_no_command_imports_json_re_or_enum(argv: list[str], tmp_path: Path) -> None:
    """The modules that cost ~10 ms per command stay out of every verb's start-up (the command
    ends in os._exit, which the probe replaces to look at sys.modules first)."""
    r, w = os.pipe()
    probe = ("import os, sys\n"
             f"sys.path.insert(0, {str(REPO)!r})\n"
             f"sys.argv = ['pyrunc', '--root', {str(tmp_path)!r}, *{argv!r}]\n"
             "real_exit = os._exit\n"
             "def report(code):\n"
             "    heavy = ('json', 're', 'enum', 'typing', 'dataclasses', 'inspect')\n"
             f"    os.write({w}, repr(sorted(m for m in heavy if m in sys.modules)).encode())\n"
             "    real_exit(code)\n"
             "os._exit = report\n"
             "from oci.pyrunc.cli import main\n"
             "main()\n")
    subprocess.run([sys.executable, "-I", "-S", "-c", probe], pass_fds=(w,), capture_output=True, timeout=30)
    os.close(w)
    with os.fdopen(r) as f:
        assert f.read() == "[]"
