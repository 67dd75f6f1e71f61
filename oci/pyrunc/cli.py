"""`pyrunc` entry point: parse, dispatch, and report failures the way runc does (log + status 1).

Each verb is a small typed record built from the parsed command line (its fields are what the verb
reads) with a `run(root)` that does it; `VERBS` maps the command name to its record. They are plain
classes with `__slots__`, not dataclasses: importing `dataclasses` pulls in `inspect` and costs
about 25 ms, on every one of the several runtime commands each container start makes.
"""

import posix
import sys

from . import log
from .args import Args
from .errors import PyruncError


def _id(a: Args) -> str:
    if not a.positional:
        raise PyruncError(f'"{a.command}" requires a container id')
    return a.positional[0]


def _str(a: Args, key: str) -> str | None:
    value = a.opts.get(key)
    return value if isinstance(value, str) else None


def _bool(a: Args, key: str) -> bool:
    return bool(a.opts.get(key))


def _preserve_fds(a: Args) -> int:
    text = _str(a, "preserve_fds") or "0"
    if not text.isdigit():
        raise PyruncError(f"invalid --preserve-fds {text!r}: a number of descriptors after stdio")
    return int(text)


def _use_preserve_fds(n: int) -> None:
    if n:
        from . import process
        process.PRESERVE_FDS = n


NO_SYSTEMD_CGROUP = ("--systemd-cgroup is not supported: pyrunc has no systemd cgroup driver and "
                     "manages cgroups through cgroupfs only; run it without --systemd-cgroup "
                     "(podman --cgroup-manager cgroupfs, cri-shim cgroup_driver = \"cgroupfs\")")


def _dump(obj: object) -> None:
    from .jsonio import dumps
    sys.stdout.write(dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


class Verb:
    __slots__ = ()

    def __init__(self, a: Args) -> None:
        """Read the verb's fields from the command line; checks that need no container go here."""

    def run(self, root: str) -> int:
        raise NotImplementedError


class Version(Verb):
    __slots__ = ()

    def run(self, root: str) -> int:
        sys.stdout.write("pyrunc version 0.1.0\nspec: 1.2.0\n")
        return 0


class Help(Verb):
    __slots__ = ()

    def run(self, root: str) -> int:
        sys.stdout.write("usage: pyrunc [global options] create|start|state|kill|delete|exec|run|list|ps|"
                         "update|pause|resume|features [options] <id>\n")
        return 0


class Create(Verb):
    __slots__ = ("id", "bundle", "pid_file", "console_socket", "no_pivot", "preserve_fds")

    def __init__(self, a: Args) -> None:
        if a.systemd_cgroup:
            raise PyruncError(NO_SYSTEMD_CGROUP)
        self.id: str = _id(a)
        self.bundle: str = _str(a, "bundle") or "."
        self.pid_file: str | None = _str(a, "pid_file")
        self.console_socket: str | None = _str(a, "console_socket")
        self.no_pivot: bool = _bool(a, "no_pivot")
        self.preserve_fds: int = _preserve_fds(a)

    def run(self, root: str) -> int:
        from .create import create
        _use_preserve_fds(self.preserve_fds)
        create(root, self.id, self.bundle, self.pid_file, self.console_socket, self.no_pivot)
        return 0


class Run(Create):
    """create + start, then (unless --detach) wait for the init and delete."""

    __slots__ = ("detach", "keep")

    def __init__(self, a: Args) -> None:
        super().__init__(a)
        self.detach: bool = _bool(a, "detach")
        self.keep: bool = _bool(a, "keep")

    def run(self, root: str) -> int:
        from . import container
        from . import syscalls as sc
        from .create import create
        _use_preserve_fds(self.preserve_fds)
        if not self.detach:
            sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # the init is re-parented to us so we can wait
        rec = create(root, self.id, self.bundle, self.pid_file, self.console_socket, self.no_pivot)
        try:
            container.start(root, self.id)
        except BaseException:
            container.delete(root, self.id, True)
            raise
        if self.detach:
            return 0
        from .exec import _wait_forwarding
        code = _wait_forwarding(rec["pid"])
        if not self.keep:
            container.delete(root, self.id, True)
        return code


class Start(Verb):
    __slots__ = ("id",)

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)

    def run(self, root: str) -> int:
        from . import container
        container.start(root, self.id)
        return 0


class State(Verb):
    __slots__ = ("id",)

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)

    def run(self, root: str) -> int:
        from . import state as st
        rec = st.load(root, self.id)
        _dump(st.oci_state(root, rec))
        return 0


class Kill(Verb):
    __slots__ = ("signal", "id", "all")

    def __init__(self, a: Args) -> None:
        from .signals import parse_signal
        self.signal: int = parse_signal(a.positional[1]) if len(a.positional) > 1 else 15
        self.id: str = _id(a)
        self.all: bool = _bool(a, "all")

    def run(self, root: str) -> int:
        from . import container
        container.kill(root, self.id, self.signal, self.all)
        return 0


class Delete(Verb):
    __slots__ = ("id", "force")

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)
        self.force: bool = _bool(a, "force")

    def run(self, root: str) -> int:
        from . import container
        container.delete(root, self.id, self.force)
        return 0


class Pause(Verb):
    __slots__ = ("id",)
    frozen = True

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)

    def run(self, root: str) -> int:
        from . import container
        container.pause(root, self.id, self.frozen)
        return 0


class Resume(Pause):
    __slots__ = ()
    frozen = False


class Exec(Verb):
    """The process comes from --process or the arguments after the id; `opts` carries the rest
    (--cwd, --env, --user, --cap ...) to exec.build_process."""

    __slots__ = ("id", "args", "process_file", "tty", "pid_file", "detach", "console_socket", "opts",
                 "preserve_fds")

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)
        self.args: list[str] = a.positional[1:]
        self.process_file: str | None = _str(a, "process")
        self.tty: bool = _bool(a, "tty")
        self.pid_file: str | None = _str(a, "pid_file")
        self.detach: bool = _bool(a, "detach")
        self.console_socket: str | None = _str(a, "console_socket")
        self.opts: dict[str, object] = a.opts
        self.preserve_fds: int = _preserve_fds(a)

    def run(self, root: str) -> int:
        from . import exec as ex
        from . import state as st
        _use_preserve_fds(self.preserve_fds)
        rec = st.load(root, self.id)
        proc = ex.build_process(rec, self.process_file, self.args, self.opts)
        if self.tty:
            proc["terminal"] = True
        return ex.run(root, self.id, proc, self.pid_file, self.detach, self.console_socket)


class List(Verb):
    __slots__ = ("quiet", "format")

    def __init__(self, a: Args) -> None:
        self.quiet: bool = _bool(a, "quiet")
        self.format: str | None = _str(a, "format")

    def run(self, root: str) -> int:
        from . import container
        states = container.list_states(root)
        if self.quiet:
            sys.stdout.write("".join(s["id"] + "\n" for s in states))
        elif self.format == "json":
            from .jsonio import dumps
            sys.stdout.write(dumps(states) + "\n")
        else:
            rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
            rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root") for s in states]
            widths = [max(len(r[i]) for r in rows) for i in range(6)]
            for r in rows:
                line = "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                sys.stdout.write(line.rstrip() + "\n")
        return 0


class Ps(Verb):
    __slots__ = ("id", "format")

    def __init__(self, a: Args) -> None:
        self.id: str = _id(a)
        self.format: str | None = _str(a, "format")

    def run(self, root: str) -> int:
        from . import cgroups
        from . import state as st
        rec = st.load(root, self.id)
        pids = cgroups.procs(rec.get("cgroups") or {})
        if self.format == "json":
            from .jsonio import dumps
            sys.stdout.write(dumps(pids) + "\n")
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


class Update(Verb):
    """--resources (a file, or - for stdin) with the single-value flags (--memory ...) over it."""

    __slots__ = ("resources", "id")

    def __init__(self, a: Args) -> None:
        from .args import update_resources
        res: dict[str, dict[str, object]] = {}
        source = _str(a, "resources")
        if source:
            from .jsonio import loads
            try:
                data = sys.stdin.read() if source == "-" else open(source).read()
                res = loads(data)
            except (OSError, ValueError) as e:
                raise PyruncError(f"reading resources: {e}") from None
        for k, v in update_resources(a.opts).items():
            res.setdefault(k, {}).update(v)
        self.resources: dict[str, dict[str, object]] = res
        self.id: str = _id(a)

    def run(self, root: str) -> int:
        from . import container
        container.update(root, self.id, self.resources)
        return 0


class Features(Verb):
    __slots__ = ()

    def run(self, root: str) -> int:
        from .features import features
        _dump(features())
        return 0


VERBS: dict[str, type[Verb]] = {
    "version": Version, "help": Help, "create": Create, "run": Run, "start": Start, "state": State,
    "kill": Kill, "delete": Delete, "pause": Pause, "resume": Resume, "exec": Exec, "list": List,
    "ps": Ps, "update": Update, "features": Features,
}


def main(argv: list[str] | None = None) -> int:
    from .args import parse
    if argv is None:  # the real command: skip interpreter finalisation, ms per short-lived run
        code = main(sys.argv[1:])
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        posix._exit(code)
    try:
        a = parse(argv)
    except PyruncError as e:
        log.error(str(e))
        return 1
    log.configure(a.log, a.log_format, a.debug)
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


def dispatch(a: Args) -> int:
    verb = VERBS.get(a.command)
    if verb is None:
        raise PyruncError(f"unknown command {a.command}")
    return verb(a).run(a.root)


if __name__ == "__main__":
    main()
