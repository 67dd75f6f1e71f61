"""--log / --log-format: runc writes logrus text or JSON lines; conmon and adapters read them."""

import posix
import sys
import time

_path: str | None = None
_json = False
_debug = False


def configure(path: str | None, fmt: str, debug: bool) -> None:
    global _path, _json, _debug
    _path, _json, _debug = path, fmt == "json", debug


def _line(level: str, msg: str) -> str:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _json:
        from .jsonio import dumps
        return dumps({"level": level, "msg": msg, "time": now}) + "\n"
    # logrus quotes the value: a quote or newline inside must not end the field
    quoted = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{now}" level={level} msg="{quoted}"\n'


def _write(level: str, msg: str) -> None:
    if not _path:
        return
    try:
        fd = posix.open(_path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
        try:
            posix.write(fd, _line(level, msg).encode())
        finally:
            posix.close(fd)
    except OSError:
        pass


def error(msg: str) -> None:
    _write("error", msg)
    try:
        sys.stderr.write(_line("error", msg) if not _json else msg + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def warning(msg: str) -> None:
    _write("warning", msg)


def debug(msg: str) -> None:
    if _debug:
        _write("debug", msg)
