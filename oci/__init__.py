"""The low-level OCI layer: runtime-spec model, runtime interface, CLI adapter, pyrunc."""
