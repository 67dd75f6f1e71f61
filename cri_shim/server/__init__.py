"""The gRPC side: services (one module per RPC family) and the call interceptor."""
