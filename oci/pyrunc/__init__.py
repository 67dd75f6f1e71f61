"""pyrunc: a pure-Python OCI runtime speaking the runc command-line interface."""
