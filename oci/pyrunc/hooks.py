"""OCI hooks: run with the container state as JSON on stdin, honouring the timeout."""

from .errors import PyruncError
from .jsonio import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any


def run(kind: str, hooks: "list[dict[str, Any]]", state: "dict[str, Any]") -> None:
    if not hooks:
        return
    import subprocess

    data = dumps(state).encode()
    for h in hooks:
        path = h.get("path")
        args = h.get("args") or [path]
        try:
            proc = subprocess.Popen(args, executable=path, env=_env(h.get("env")), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
        except OSError as e:
            raise PyruncError(f"error running {kind} hook {path}: {e.strerror}") from None
        try:
            out, err = proc.communicate(data, timeout=h.get("timeout") or None)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PyruncError(f"{kind} hook {path} timed out after {h.get('timeout')}s") from None
        if proc.returncode != 0:
            raise PyruncError(f"error running {kind} hook {path}: exit status {proc.returncode}, "
                              f"stdout: {out.decode(errors='replace')}, "
                              f"stderr: {err.decode(errors='replace')}")


def _env(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out
