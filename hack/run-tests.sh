#!/bin/sh
# The whole test suite: lint, unit, backend conformance, end to end.
# Extra arguments go to pytest (e.g. hack/run-tests.sh -k pyrunc).
# With CRI_SHIM_VM_TESTS=1 (CI sets it) the cgroup v2 lane follows: hack/vm-tests.py runs its
# cgroup v2 selection in a QEMU guest; a lane that cannot start fails the run.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest collected no tests; that is a failure" >&2
    exit 1
fi

# --- the cgroup v2 lane ---------------------------------------------------------
if [ -n "${CRI_SHIM_VM_TESTS:-}" ] && [ "$CRI_SHIM_VM_TESTS" != 0 ]; then
    start=$(date +%s)
    hack/vm-tests.py
    vm_rc=$?
    echo "run-tests: cgroup v2 lane exit status $vm_rc after $(( $(date +%s) - start ))s" >&2
    if [ "$vm_rc" -eq 5 ]; then
        echo "run-tests: the cgroup v2 lane collected no tests; that is a failure" >&2
    fi
    [ "$rc" -ne 0 ] || [ "$vm_rc" -eq 0 ] || rc=1
fi
exit "$rc"
