"""What a CRI runtime handler runs containers with: one object per handler (HandlerRuntime),
the only place in cri_shim that drives an OCI runtime or puts its command line together."""
