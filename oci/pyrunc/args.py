"""runc-compatible command-line parsing (urfave/cli style: flags before positionals, `--x=v`
or `--x v`, unknown global flags accepted as conmon and containerd pass runtime-specific ones).
Hand-written instead of argparse to keep start-up imports tiny."""

from .errors import PyruncError

GLOBAL_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}
GLOBAL_BOOL = {"--debug", "--systemd-cgroup", "--help", "-h", "--version", "-v"}

_CREATE = {"value": {"--bundle": "bundle", "-b": "bundle", "--pid-file": "pid_file",
                     "--console-socket": "console_socket", "--preserve-fds": "preserve_fds",
                     "--pidfd-socket": "pidfd_socket"},
           "bool": {"--no-pivot": "no_pivot", "--no-new-keyring": "no_new_keyring"}}
COMMANDS: dict[str, dict[str, dict[str, str]]] = {
    "create": _CREATE,
    "run": {"value": dict(_CREATE["value"]),
            "bool": {**_CREATE["bool"], "--detach": "detach", "-d": "detach", "--keep": "keep"}},
    "start": {}, "state": {}, "pause": {}, "resume": {}, "features": {},
    "kill": {"bool": {"--all": "all", "-a": "all"}},
    "delete": {"bool": {"--force": "force", "-f": "force"}},
    "exec": {"value": {"--process": "process", "-p": "process", "--pid-file": "pid_file",
                       "--console-socket": "console_socket", "--cwd": "cwd", "--user": "user", "-u": "user",
                       "--preserve-fds": "preserve_fds", "--process-label": "process_label",
                       "--apparmor": "apparmor", "--cgroup": "cgroup", "--pidfd-socket": "pidfd_socket"},
             "multi": {"--env": "env", "-e": "env", "--additional-gids": "additional_gids",
                       "-g": "additional_gids", "--cap": "cap", "-c": "cap"},
             "bool": {"--detach": "detach", "-d": "detach", "--tty": "tty", "-t": "tty",
                      "--no-new-privs": "no_new_privs", "--ignore-paused": "ignore_paused"}},
    "list": {"value": {"--format": "format", "-f": "format"}, "bool": {"--quiet": "quiet", "-q": "quiet"}},
    "ps": {"value": {"--format": "format", "-f": "format"}},
    "update": {"value": {"--resources": "resources", "-r": "resources", "--memory": "memory",
                         "--memory-reservation": "memory_reservation", "--memory-swap": "memory_swap",
                         "--kernel-memory": "kernel_memory", "--kernel-memory-tcp": "kernel_memory_tcp",
                         "--cpu-shares": "cpu_shares", "--cpu-quota": "cpu_quota",
                         "--cpu-period": "cpu_period", "--cpu-rt-period": "cpu_rt_period",
                         "--cpu-rt-runtime": "cpu_rt_runtime", "--cpuset-cpus": "cpuset_cpus",
                         "--cpuset-mems": "cpuset_mems", "--pids-limit": "pids_limit",
                         "--blkio-weight": "blkio_weight", "--l3-cache-schema": "l3_cache_schema",
                         "--mem-bw-schema": "mem_bw_schema"}},
}


class Args:
    def __init__(self) -> None:
        self.command = ""
        self.root = "/run/pyrunc"
        self.log: str | None = None
        self.log_format = "text"
        self.debug = False
        self.systemd_cgroup = False
        self.opts: dict[str, object] = {}
        self.positional: list[str] = []


def _split(arg: str) -> tuple[str, str | None]:
    if arg.startswith("--") and "=" in arg:
        k, _, v = arg.partition("=")
        return k, v
    return arg, None


def parse(argv: list[str]) -> Args:
    a = Args()
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        key, val = _split(argv[i])
        if key in GLOBAL_VALUE:
            if val is None:
                i += 1
                if i >= len(argv):
                    raise PyruncError(f"flag needs an argument: {key}")
                val = argv[i]
            if key == "--root":
                a.root = val
            elif key == "--log":
                a.log = val
            elif key == "--log-format":
                if val not in ("text", "json"):
                    raise PyruncError(f"unknown log-format {val!r}")
                a.log_format = val
        elif key in GLOBAL_BOOL:
            if key == "--debug":
                a.debug = val in (None, "true", "1")
            elif key == "--systemd-cgroup":
                a.systemd_cgroup = val in (None, "true", "1")
            elif key in ("--help", "-h"):
                a.command = "help"
            elif key in ("--version", "-v"):
                a.command = "version"
        else:
            raise PyruncError(f"flag provided but not defined: {key}")
        i += 1
    if a.command:
        return a
    if i >= len(argv):
        raise PyruncError("no command given")
    a.command = argv[i]
    i += 1
    spec = COMMANDS.get(a.command)
    if spec is None:
        raise PyruncError(f"No help topic for '{a.command}'")
    values, bools, multi = spec.get("value", {}), spec.get("bool", {}), spec.get("multi", {})
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            a.positional += argv[i + 1:]
            break
        if not arg.startswith("-") or arg == "-" or a.positional:
            # the first positional (the id) ends flag parsing; the rest belong to the command
            a.positional.append(arg)
            i += 1
            continue
        key, val = _split(arg)
        if key in values or key in multi:
            if val is None:
                i += 1
                if i >= len(argv):
                    raise PyruncError(f"flag needs an argument: {key}")
                val = argv[i]
            if key in values:
                a.opts[values[key]] = val
            else:
                a.opts.setdefault(multi[key], [])
                a.opts[multi[key]].append(val)  # type: ignore[union-attr]
        elif key in bools:
            a.opts[bools[key]] = val in (None, "true", "1")
        elif len(key) > 2 and key[0] == "-" and key[1] != "-" and all(f"-{c}" in bools for c in key[1:]):
            for c in key[1:]:  # -dt
                a.opts[bools[f"-{c}"]] = True
        else:
            raise PyruncError(f"flag provided but not defined: {key}")
        i += 1
    return a


_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """docker-style sizes as runc update takes them: 512, 100k, 64m, 1g, -1."""
    s = text.strip().lower()
    if s.endswith("b") and len(s) > 1 and s[-2] in _UNITS:
        s = s[:-1]
    mult = 1
    if s and s[-1] in _UNITS:
        mult = _UNITS[s[-1]]
        s = s[:-1]
    try:
        return int(float(s) * mult) if s != "-1" else -1
    except ValueError:
        raise PyruncError(f"invalid size {text!r}") from None


def update_resources(opts: dict[str, object]) -> dict[str, dict[str, object]]:
    res: dict[str, dict[str, object]] = {}

    def put(section: str, key: str, value: object) -> None:
        res.setdefault(section, {})[key] = value

    for opt, section, key, conv in (
        ("memory", "memory", "limit", parse_size),
        ("memory_reservation", "memory", "reservation", parse_size),
        ("memory_swap", "memory", "swap", parse_size), ("kernel_memory", "memory", "kernel", parse_size),
        ("cpu_shares", "cpu", "shares", int), ("cpu_quota", "cpu", "quota", int),
        ("cpu_period", "cpu", "period", int), ("cpu_rt_period", "cpu", "realtimePeriod", int),
        ("cpu_rt_runtime", "cpu", "realtimeRuntime", int), ("cpuset_cpus", "cpu", "cpus", str),
        ("cpuset_mems", "cpu", "mems", str), ("pids_limit", "pids", "limit", int),
        ("blkio_weight", "blockIO", "weight", int),
    ):
        if opt in opts:
            try:
                put(section, key, conv(str(opts[opt])))  # type: ignore[operator]
            except ValueError:
                raise PyruncError(f"invalid value for --{opt.replace('_', '-')}: {opts[opt]!r}") from None
    return res
