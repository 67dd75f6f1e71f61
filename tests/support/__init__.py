"""Helpers more than one suite (and hack/'s benchmarks) use: test images pushed over a registry's
HTTP API (`testimages`) and a throw-away local registry with its pytest fixtures (`registry`)."""
