"""Containers: OCI spec generation, conmon supervision, the container store."""
