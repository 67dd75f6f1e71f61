"""Wire compatibility against an independent description of runtime.v1.

The PyPI package container-runtime-interface-api ships generated modules with a
serialized FileDescriptorProto. It pins an older protobuf, so it is installed
without dependencies and its descriptor is read out of the source with `ast`
instead of importing it. Everything it declares must exist identically in ours.
"""

import ast
from importlib import metadata
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from cri_shim.criapi import api_pb2

BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
# cri-api v0.36 turned KeyValue.value from string into bytes so env values can carry
# binary data (upstream "Restore ability to plumb binary data through envvar values").
# The reference package predates that; both encode as length-delimited, so the wire
# format is unchanged.
STRING_BECAME_BYTES = {("KeyValue", "value")}


def _reference_descriptor() -> descriptor_pb2.FileDescriptorProto:
    try:
        files = metadata.files("container-runtime-interface-api") or []
    except metadata.PackageNotFoundError:
        pytest.fail("install it: pip install --no-deps container-runtime-interface-api")
    (path,) = [f for f in files if str(f).replace("\\", "/").endswith("cri_api/v1/api_pb2.py")]
    source = Path(str(path.locate())).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(node.args[0]))
    raise AssertionError("no serialized descriptor in the reference module")


def _ours() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    api_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd


def _messages(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs) -> None:
        for m in msgs:
            out[prefix + m.name] = m
            walk(prefix + m.name + ".", m.nested_type)

    walk("", fd.message_type)
    return out


def _enums(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
    out = {e.name: e for e in fd.enum_type}
    for name, m in _messages(fd).items():
        for e in m.enum_type:
            out[f"{name}.{e.name}"] = e
    return out


def test_same_package() -> None:
    assert _reference_descriptor().package == _ours().package == "runtime.v1"


def test_every_method_matches() -> None:
    ours = {s.name: {m.name: m for m in s.method} for s in _ours().service}
    ref = _reference_descriptor()
    assert ref.service, "reference descriptor has no services"
    for svc in ref.service:
        assert svc.name in ours, f"service {svc.name} missing"
        for m in svc.method:
            mine = ours[svc.name].get(m.name)
            assert mine is not None, f"{svc.name}.{m.name} missing"
            sig = (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            assert (mine.input_type, mine.output_type, mine.client_streaming, mine.server_streaming) == sig


def test_every_field_matches() -> None:
    ours = _messages(_ours())
    ref = _messages(_reference_descriptor())
    assert len(ref) > 100
    for name, msg in ref.items():
        assert name in ours, f"message {name} missing"
        mine = {f.number: f for f in ours[name].field}
        for f in msg.field:
            got = mine.get(f.number)
            assert got is not None, f"{name}.{f.name} (#{f.number}) missing"
            want_type = BYTES if (name, f.name) in STRING_BECAME_BYTES else f.type
            assert (got.name, got.type, got.type_name, got.label) == (
                f.name, want_type, f.type_name, f.label,
            ), f"{name}.{f.name} differs"


def test_every_enum_value_matches() -> None:
    ours = _enums(_ours())
    for name, enum in _enums(_reference_descriptor()).items():
        assert name in ours, f"enum {name} missing"
        mine = {v.name: v.number for v in ours[name].value}
        for v in enum.value:
            assert mine.get(v.name) == v.number, f"{name}.{v.name} differs"
