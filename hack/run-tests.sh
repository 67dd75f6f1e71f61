#!/bin/sh
# The whole test suite: lint, unit, backend conformance, end to end.
# Extra arguments go to pytest (e.g. hack/run-tests.sh -k pyrunc).
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
exit "$rc"
