"""`pyrunc` entry point: parse, dispatch, and report failures the way runc does (log + status 1)."""

from __future__ import annotations

import os
import sys

from . import log
from .errors import PyruncError


def _id(a: object, n: int = 1) -> str:
    pos = a.positional  # type: ignore[attr-defined]
    if len(pos) < n:
        raise PyruncError(f'"{a.command}" requires a container id')  # type: ignore[attr-defined]
    return pos[0]


def _dump(obj: object) -> None:
    import json
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    from .args import parse
    if argv is None:  # the real command: skip interpreter finalisation, ms per short-lived run
        code = main(sys.argv[1:])
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)
    try:
        a = parse(argv)
    except PyruncError as e:
        log.error(str(e))
        return 1
    log.configure(a.log, a.log_format, a.debug)
    if a.command in ("create", "run"):
        from . import cgroups
        cgroups.prewarm()
    try:
        rc = dispatch(a)
    except PyruncError as e:
        log.error(f"pyrunc {a.command} failed: {e}" if a.command in ("create", "run", "exec") else str(e))
        return 1
    except OSError as e:
        log.error(f"pyrunc {a.command} failed: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


def dispatch(a: object) -> int:  # noqa: C901 - a flat table of verbs
    from . import container
    from . import state as st
    cmd: str = a.command  # type: ignore[attr-defined]
    root: str = a.root  # type: ignore[attr-defined]
    o: dict = a.opts  # type: ignore[attr-defined]
    pos: list[str] = a.positional  # type: ignore[attr-defined]
    if cmd == "version":
        sys.stdout.write("pyrunc version 0.1.0\nspec: 1.2.0\n")
        return 0
    if cmd == "help":
        sys.stdout.write("usage: pyrunc [global options] create|start|state|kill|delete|exec|run|list|ps|"
                         "update|pause|resume|features [options] <id>\n")
        return 0
    if cmd == "create":
        container.create(root, _id(a), o.get("bundle") or ".", o.get("pid_file"), o.get("console_socket"),
                         bool(o.get("no_pivot")))
        return 0
    if cmd == "run":
        return _run(a)
    if cmd == "start":
        container.start(root, _id(a))
        return 0
    if cmd == "state":
        rec = st.load(root, _id(a))
        _dump(st.oci_state(root, rec))
        return 0
    if cmd == "kill":
        from .signals import parse_signal
        sig = parse_signal(pos[1]) if len(pos) > 1 else 15
        container.kill(root, _id(a), sig, bool(o.get("all")))
        return 0
    if cmd == "delete":
        container.delete(root, _id(a), bool(o.get("force")))
        return 0
    if cmd in ("pause", "resume"):
        container.pause(root, _id(a), cmd == "pause")
        return 0
    if cmd == "exec":
        from . import exec as ex
        cid = _id(a)
        rec = st.load(root, cid)
        proc = ex.build_process(rec, o.get("process"), pos[1:], o)
        if o.get("tty"):
            proc["terminal"] = True
        return ex.run(root, cid, proc, o.get("pid_file"), bool(o.get("detach")), o.get("console_socket"))
    if cmd == "list":
        states = container.list_states(root)
        if o.get("quiet"):
            sys.stdout.write("".join(s["id"] + "\n" for s in states))
        elif o.get("format") == "json":
            import json
            sys.stdout.write(json.dumps(states) + "\n")
        else:
            rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
            rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root") for s in states]
            widths = [max(len(r[i]) for r in rows) for i in range(6)]
            for r in rows:
                line = "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                sys.stdout.write(line.rstrip() + "\n")
        return 0
    if cmd == "ps":
        from . import cgroups
        rec = st.load(root, _id(a))
        pids = cgroups.procs(rec.get("cgroups") or {})
        if o.get("format") == "json":
            import json
            sys.stdout.write(json.dumps(pids) + "\n")
        else:
            sys.stdout.write("PID   CMD\n")
            for p in pids:
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    cmdline = "?"
                sys.stdout.write(f"{p:<5} {cmdline}\n")
        return 0
    if cmd == "update":
        from .args import update_resources
        res: dict = {}
        if o.get("resources"):
            import json
            try:
                data = sys.stdin.read() if o["resources"] == "-" else open(o["resources"]).read()
                res = json.loads(data)
            except (OSError, ValueError) as e:
                raise PyruncError(f"reading resources: {e}") from None
        for k, v in update_resources(o).items():
            res.setdefault(k, {}).update(v)
        container.update(root, _id(a), res)
        return 0
    if cmd == "features":
        from .features import features
        _dump(features())
        return 0
    raise PyruncError(f"unknown command {cmd}")


def _run(a: object) -> int:
    """create + start, then (unless --detach) wait for the init and delete."""
    from . import container
    from . import syscalls as sc
    o: dict = a.opts  # type: ignore[attr-defined]
    root: str = a.root  # type: ignore[attr-defined]
    cid = _id(a)
    detach = bool(o.get("detach"))
    if not detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # the init is re-parented to us so we can wait
    rec = container.create(root, cid, o.get("bundle") or ".", o.get("pid_file"), o.get("console_socket"),
                           bool(o.get("no_pivot")))
    try:
        container.start(root, cid)
    except BaseException:
        container.delete(root, cid, True)
        raise
    if detach:
        return 0
    from .exec import _wait_forwarding
    code = _wait_forwarding(rec["pid"])
    if not o.get("keep"):
        container.delete(root, cid, True)
    return code


if __name__ == "__main__":
    main()
