"""Container and pod stats in one place: cgroup readers (`cgroups`), CPU rates between polls
(`rates`), ContainerStats (`container`), PodSandboxStats with the pod network (`pod`) and the
cAdvisor-style metrics (`metrics`). The RPCs in cri_shim.server only call these; the managers
keep the lifecycle and the in-memory indexes these read (containerd: container_stats_list.go,
sandbox_stats_linux.go)."""
