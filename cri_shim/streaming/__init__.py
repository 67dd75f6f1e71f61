"""The CRI streaming server: Exec, Attach and PortForward over SPDY/3.1 and WebSocket.

Protocol cores (spdy, channels) are sans-IO: bytes in, events out. The server owns the
sockets; the container side (exec, attach, port-forward) talks to a StreamIO only.
"""
