"""Signal names as runc accepts them: KILL, SIGKILL, sigkill, 9, and RT signals."""

import _signal as signal  # not `signal`: its IntEnum set-up costs milliseconds per `kill`

from .errors import PyruncError


def parse_signal(text: str) -> int:
    s = text.strip()
    if s.isdigit():
        num = int(s)
        if 0 < num <= signal.SIGRTMAX:
            return num
        raise PyruncError(f"unknown signal {text!r}")
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base, _, off = name[3:].partition("+" if "+" in name else "-")
        try:
            n = int(off)
        except ValueError:
            raise PyruncError(f"unknown signal {text!r}") from None
        num = signal.SIGRTMIN + n if base == "RTMIN" else signal.SIGRTMAX - n
        if signal.SIGRTMIN <= num <= signal.SIGRTMAX:
            return num
        raise PyruncError(f"unknown signal {text!r}")
    # the names signal.Signals has: SIG*, not the SIG_* handler and mask constants
    num = getattr(signal, name, None) if not name.startswith("SIG_") else None
    if not isinstance(num, int):
        raise PyruncError(f"unknown signal {text!r}")
    return num
