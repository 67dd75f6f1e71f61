"""Stop signals (KEP-4960): ContainerConfig.stop_signal overrides the image's STOPSIGNAL;
StopContainer sends it and ContainerStatus.stop_signal reports it. Names are kept as the
image writes them (SIGTERM, TERM, 15, SIGRTMIN+3) and read into numbers here."""

from __future__ import annotations

import signal

from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument

DEFAULT = "SIGTERM"


def from_cri(value: int) -> str | None:
    """The CRI enum as a signal name; None for RUNTIME_DEFAULT (the image's, else SIGTERM)."""
    if value == pb.RUNTIME_DEFAULT:
        return None
    try:
        name = pb.Signal.Name(value)
    except ValueError:
        raise InvalidArgument(f"config.stop_signal {value} is not in the CRI Signal enum") from None
    if name.startswith("SIGRTMINPLUS"):
        return f"SIGRTMIN+{name.removeprefix('SIGRTMINPLUS')}"
    if name.startswith("SIGRTMAXMINUS"):
        return f"SIGRTMAX-{name.removeprefix('SIGRTMAXMINUS')}"
    return name


def number(name: str) -> int:
    """A signal name or number as the kernel's number; SIGTERM for what cannot be read."""
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    for base, sign in (("SIGRTMIN+", 1), ("SIGRTMAX-", -1)):
        if text.startswith(base) and text[len(base):].isdigit():
            anchor = signal.SIGRTMIN if sign > 0 else signal.SIGRTMAX
            return int(anchor) + sign * int(text[len(base):])
    aliases = {"SIGCLD": "SIGCHLD", "SIGPOLL": "SIGIO", "SIGIOT": "SIGABRT"}
    try:
        return int(signal.Signals[aliases.get(text, text)])
    except KeyError:
        return int(signal.SIGTERM)


def to_cri(name: str) -> int:
    """The CRI enum value of a signal name or number (RUNTIME_DEFAULT if it has none)."""
    n = number(name)
    rtmin, rtmax = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if rtmin < n <= rtmin + 15:
        enum_name = f"SIGRTMINPLUS{n - rtmin}"
    elif rtmax - 14 <= n < rtmax:
        enum_name = f"SIGRTMAXMINUS{rtmax - n}"
    elif n == rtmin:
        enum_name = "SIGRTMIN"
    elif n == rtmax:
        enum_name = "SIGRTMAX"
    else:
        try:
            enum_name = signal.Signals(n).name
        except ValueError:
            return pb.RUNTIME_DEFAULT
    try:
        return int(pb.Signal.Value(enum_name))
    except ValueError:
        return pb.RUNTIME_DEFAULT
