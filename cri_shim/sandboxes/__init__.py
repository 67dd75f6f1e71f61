"""Pod sandboxes: pinned namespaces, pod files, networking, the sandbox store."""
