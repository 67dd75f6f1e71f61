"""pyrunc: a pure-Python OCI runtime speaking the runc command-line interface."""

import sys

# pyrunc is a short-lived command run several times per container: recompiling its modules on
# every run (PYTHONDONTWRITEBYTECODE is common in CI and containers) would double its start-up
# time, so its own bytecode is always cached.
sys.dont_write_bytecode = False
