#!/bin/sh
# Regenerate the Python modules for the CRI API from proto/runtime/v1/api.proto.
# Usage: hack/gen-proto.sh [OUTDIR]   (default: cri_shim/criapi)
# tests/unit/test_proto_generated.py runs this into a temp dir and fails when the
# committed modules differ, so run it after every edit of the .proto file.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/cri_shim/criapi}
py=${PYTHON:-$here/.venv/bin/python}
[ -x "$py" ] || py=python3
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$here/proto/runtime/v1" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "$here/proto/runtime/v1/api.proto"
# protoc writes an absolute import; the modules live in a package.
sed -i 's/^import api_pb2 as api__pb2$/from . import api_pb2 as api__pb2/' "$out/api_pb2_grpc.py"
cat > "$out/__init__.py" <<'PY'
"""Generated CRI runtime.v1 stubs. Do not edit: run hack/gen-proto.sh."""
PY
