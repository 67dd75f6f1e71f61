"""Generated CRI runtime.v1 stubs. Do not edit: run hack/gen-proto.sh."""
