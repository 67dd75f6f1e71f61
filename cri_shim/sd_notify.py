"""systemd's readiness protocol (sd_notify): one datagram of KEY=VALUE lines to the unix
socket named by $NOTIFY_SOCKET (an "@" first means the abstract namespace). Without the
variable (not under systemd, or Type= is not notify) every call does nothing."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes | None:
    """The address $NOTIFY_SOCKET names, or None when it names nothing we can use."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not ours to speak


def message(**fields: str | int) -> bytes:
    """KEY=VALUE lines: message(READY=1, STATUS="serving") -> b"READY=1\\nSTATUS=serving"."""
    for key, value in fields.items():
        if not key.isupper() or "\n" in str(value):
            raise ValueError(f"sd_notify field {key}={value!r} is not a KEY=VALUE line")
    return "\n".join(f"{k}={v}" for k, v in fields.items()).encode()


def notify(**fields: str | int) -> bool:
    """Send the fields to systemd; True when sent. A failure is logged, never raised: a
    daemon must not die because its supervisor went away."""
    address = socket_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message(**fields))
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False
    return True
