#!/usr/bin/env python3
"""Run part of the test suite inside a cgroup v2 guest (virtme-ng, QEMU, Debian's kernel).

    hack/vm-tests.py [OPTIONS] [--] [PYTEST_ARGS...]

Without PYTEST_ARGS it runs the cgroup v2 selection that CI runs (CGROUP_V2_SELECTION below):
the conformance suite's cgroup tests (memory and OOM, pids, cpu, update, pause/freeze, swap,
hugetlb, cgroup membership) plus the device filter, cgroup namespaces (new, in a user namespace,
joined), the cgroups of an exec'd process and process listing on runc, crun and pyrunc, and the
end-to-end OOMKilled and pod lifecycle with stats tests.

Boots Debian's stock kernel (linux-image-amd64, /boot/vmlinuz-*) with virtme-ng under
QEMU's TCG (no KVM), the host's file system shared read-only over 9p. The kernel mounts only
cgroup2, with every controller, so this exercises the cgroup v2 code of the runtimes and of
the daemon on a cgroup v1 or hybrid host. Inside the guest it checks that /sys/fs/cgroup is
cgroup2fs (and fails otherwise), mounts a tmpfs for TMPDIR, HOME and the CNI and runtime state
directories, and runs `.venv/bin/python -m pytest -p no:cacheprovider -ra PYTEST_ARGS` in the
checkout. Output streams as it comes (QEMU's console is piped through, never a file).

Exit status: pytest's (0 passed, 1 failed, 5 no tests...); 125 when the lane did not run (no
QEMU, virtme-ng or kernel, the guest did not boot, or it is not cgroup v2 only); 124 when the
guest ran past --timeout; 2 for a bad option. Each test may take 5 minutes (pytest-timeout,
with Python's stack dump first; a -o timeout=N of your own wins). A guest that prints nothing
for 8 minutes is wedged: it is killed and booted once more (within --timeout); a second
silence is status 124. The kernel is booted with hung-task and stall reports on the console.

Options:
  --kernel PATH     guest kernel (default: the newest /boot/vmlinuz-*)
  --memory SIZE     guest memory (default 2G)
  --cpus N          guest vCPUs (default 2)
  --timeout SECS    stop the lane after this long, boots included (default 1800)
  --vng PATH        the vng command (default: .venv/vng/bin/vng, then PATH)
  --dry-run         print the vng command line and exit

Setup (as root): `CRI_SHIM_VM_TESTS=1 hack/setup-host.sh` installs qemu-system-x86 and
linux-image-amd64 and makes the virtualenv .venv/vng with virtme-ng.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
NOT_RUN = 125  # the lane could not run: distinct from every pytest status
TIMED_OUT = 124
WEDGED = -1  # internal: the guest went silent (never an exit status)
BAD_USAGE = 2
# What CI runs in the guest: every test whose subject is a cgroup v2 file, on each handler.
CGROUP_V2_SELECTION = [
    "tests/conformance/test_cgroups.py",
    "tests/conformance/test_mounts.py::test_device_cgroup_denies_unlisted_devices",
    "tests/conformance/test_namespaces.py::test_cgroup_namespace_when_requested",
    "tests/conformance/test_namespaces.py::test_cgroup_namespace_in_a_user_namespace",
    "tests/conformance/test_namespaces.py::test_join_another_containers_cgroup_namespace",
    "tests/conformance/test_exec.py::test_exec_process_is_in_the_containers_cgroups",
    "tests/conformance/test_lifecycle.py::test_pids_lists_container_processes",
    "tests/e2e/test_containers.py::test_exit_codes_and_oom",
    "tests/e2e/test_containers.py::test_update_reopen_stats_and_events",
]
# Under emulation a test takes 15-30 times as long as on the host; the slowest of the CI
# selection takes about 60 s in the guest.
GUEST_TEST_TIMEOUT = 300
# Python's own stack dump of a test stuck past this, even where SIGALRM cannot interrupt it.
GUEST_FAULTHANDLER_TIMEOUT = 280
# A guest that prints nothing for this long is wedged (a test prints a dot within
# GUEST_TEST_TIMEOUT, or pytest-timeout reports it): it is stopped, and booted once more.
SILENCE_LIMIT = 480.0
BOOT_ATTEMPTS = 2
# Kernel messages a wedged guest should leave on the console: hung tasks, lockups, RCU stalls.
KERNEL_DIAGNOSTICS = "loglevel=4 hung_task_timeout_secs=60 rcupdate.rcu_cpu_stall_timeout=60"
# Everything the tests write lives here in the guest: a tmpfs, because the guest's root is
# 9p (no device nodes) and its /tmp an overlay on it (no overlay mounts on top of that).
GUEST_SCRATCH = "/run/vm-tests"
# A second, read-only 9p export of the host's / that the guest mounts with cache=loose: vng's
# root is uncached 9p, where every Python start costs seconds of round trips under TCG.
CACHED_TAG = "crishimhost"
GUEST_CACHED_ROOT = "/run/vm-tests-host"
STATUS_FILE = "status"
NOT_RUN_FILE = "not-run"
REQUEST_FILE = "request.json"


class UsageError(Exception):
    """A bad option."""


class NotRunnable(Exception):
    """Something the lane needs is missing."""


@dataclass
class Options:
    kernel: str | None = None
    memory: str = "2G"
    cpus: int = 2
    timeout: float = 1800.0
    vng: str | None = None
    dry_run: bool = False
    help: bool = False
    pytest_args: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Options:
    """Our options first; the first argument we do not know, or everything after --, is pytest's."""
    opts = Options()
    valued = {"--kernel", "--memory", "--cpus", "--timeout", "--vng"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts.pytest_args = argv[i + 1:]
            break
        if arg in ("-h", "--help"):
            opts.help = True
            return opts
        if arg == "--dry-run":
            opts.dry_run = True
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name in valued:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i + 1]
                i += 1
            _set_option(opts, name, value)
            i += 1
            continue
        opts.pytest_args = argv[i:]
        break
    return opts


def pytest_argv(args: list[str]) -> list[str]:
    """The pytest command line the guest runs: the CI selection when none is given."""
    return ["-p", "no:cacheprovider", "-ra", "-o", f"timeout={GUEST_TEST_TIMEOUT}",
            "-o", f"faulthandler_timeout={GUEST_FAULTHANDLER_TIMEOUT}",
            *(args or CGROUP_V2_SELECTION)]


def _set_option(opts: Options, name: str, value: str) -> None:
    if name == "--kernel":
        opts.kernel = value
    elif name == "--memory":
        if not re.fullmatch(r"\d+[MG]?", value):
            raise UsageError(f"--memory {value!r}: give a size such as 2G or 1536M")
        opts.memory = value
    elif name == "--cpus":
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"--cpus {value!r}: give a positive number")
        opts.cpus = int(value)
    elif name == "--timeout":
        try:
            opts.timeout = float(value)
        except ValueError:
            raise UsageError(f"--timeout {value!r}: give seconds") from None
        if opts.timeout <= 0:
            raise UsageError("--timeout must be positive")
    elif name == "--vng":
        opts.vng = value


def _version_key(path: str) -> list[tuple[int, str]]:
    """Sort key for kernel file names: numeric parts as numbers (6.1.0-10 after 6.1.0-9)."""
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"(\d+)", Path(path).name)]


def find_kernel(pattern: str = "/boot/vmlinuz-*") -> str | None:
    kernels = sorted(glob.glob(pattern), key=_version_key)
    return kernels[-1] if kernels else None


def find_vng(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    local = CHECKOUT / ".venv" / "vng" / "bin" / "vng"
    return str(local) if os.access(local, os.X_OK) else shutil.which("vng")


def vng_command(vng: str, kernel: str, opts: Options, results: Path, python: str) -> list[str]:
    guest = [python, str(CHECKOUT / "hack" / "vm-tests.py"), "--guest", str(results)]
    return [
        vng, "--run", kernel,
        "--disable-kvm",   # the host's /dev/kvm (if any) may not boot stock kernels; TCG always does
        "--force-9p",
        "--disable-monitor",
        "--memory", opts.memory, "--cpus", str(opts.cpus),
        "--append", KERNEL_DIAGNOSTICS,
        f"--qemu-opts=-fsdev local,id={CACHED_TAG},path=/,security_model=none,readonly=on,multidevs=remap"
        f" -device virtio-9p-pci,fsdev={CACHED_TAG},mount_tag={CACHED_TAG}",
        "--rwdir", str(results),  # the one place the guest writes to the host: its exit status
        "--cwd", str(CHECKOUT),
        "--exec", guest_bootstrap(cached_binds(), guest),
    ]


def say(msg: str) -> None:
    print(f"vm-tests: {msg}", file=sys.stderr, flush=True)


def preflight(opts: Options) -> tuple[str, str, str]:
    """(vng, kernel, python), or NotRunnable naming everything that is missing."""
    hint = "run `CRI_SHIM_VM_TESTS=1 hack/setup-host.sh` as root"
    missing = []
    vng = find_vng(opts.vng)
    if vng is None:
        missing.append(f"virtme-ng (vng) not found ({opts.vng or '.venv/vng/bin/vng nor on PATH'})")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 not on PATH (Debian package qemu-system-x86)")
    kernel = opts.kernel or find_kernel()
    if kernel is None or not os.path.exists(kernel):
        missing.append(f"no guest kernel ({kernel or '/boot/vmlinuz-*'}; Debian package linux-image-amd64)")
    python = CHECKOUT / ".venv" / "bin" / "python"
    if not os.access(python, os.X_OK):
        missing.append(f"{python} missing (run hack/setup-host.sh)")
    if missing:
        raise NotRunnable("; ".join(missing) + f": {hint}")
    assert vng and kernel
    return vng, kernel, str(python)


def run_host(opts: Options) -> int:
    vng, kernel, python = preflight(opts)
    if os.geteuid() != 0:
        raise NotRunnable("run as root (the guest runs as the host user, and the tests need root)")
    results = Path(tempfile.mkdtemp(prefix="cri-shim-vm-"))
    try:
        (results / REQUEST_FILE).write_text(json.dumps({
            "pytest_args": pytest_argv(opts.pytest_args),
            "color": sys.stdout.isatty(),
            "started": time.time(),
        }))
        cmd = vng_command(vng, kernel, opts, results, python)
        if opts.dry_run:
            print(shlex.join(cmd))
            return 0
        deadline = time.monotonic() + opts.timeout
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            say(f"booting {Path(kernel).name} under TCG ({opts.cpus} vCPU, {opts.memory}); "
                f"pytest {shlex.join(pytest_argv(opts.pytest_args))}")
            status = _boot_and_stream(cmd, vng, deadline - time.monotonic(), results)
            if status != WEDGED:
                return status
            if attempt < BOOT_ATTEMPTS and deadline - time.monotonic() > SILENCE_LIMIT:
                say("booting a fresh guest: a wedged emulator is not a test result")
                continue
            return TIMED_OUT
        return TIMED_OUT
    finally:
        shutil.rmtree(results, ignore_errors=True)


def _boot_and_stream(cmd: list[str], vng: str, timeout: float, results: Path,
                     silence_limit: float = SILENCE_LIMIT) -> int:
    """Run the guest, passing its console through; its pytest status, NOT_RUN, TIMED_OUT, or
    WEDGED when it printed nothing for silence_limit seconds (it is killed then)."""
    env = dict(os.environ)
    # vng runs its helpers (virtme-run) by name: they live beside it
    env["PATH"] = f"{Path(vng).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    for stale in (STATUS_FILE, NOT_RUN_FILE):
        (results / stale).unlink(missing_ok=True)
    t0 = time.monotonic()
    # QEMU truncates files given as its stdout/stderr, so its console comes through a pipe
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    assert proc.stdout is not None
    stopped = ""
    try:
        stopped = _stream(proc, t0 + timeout, silence_limit)
        vng_status = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    elapsed = time.monotonic() - t0
    status_file = results / STATUS_FILE
    if status_file.exists():
        status = int(status_file.read_text().split()[0])
        say(f"pytest exit status {status}; guest lifetime {elapsed:.0f}s")
        return status
    if stopped == "silent":
        say(f"the guest printed nothing for {silence_limit:.0f}s and was stopped "
            f"after {elapsed:.0f}s: the emulator or the guest kernel is wedged")
        return WEDGED
    if stopped == "timeout":
        say(f"the guest ran past --timeout ({elapsed:.0f}s) and was stopped")
        return TIMED_OUT
    reason = results / NOT_RUN_FILE
    why = reason.read_text().strip() if reason.exists() else f"vng exit status {vng_status}"
    say(f"the guest did not run the tests ({why}; after {elapsed:.0f}s)")
    return NOT_RUN


def _stream(proc: subprocess.Popen[bytes], deadline: float, silence_limit: float) -> str:
    """Copy the console to stdout until it closes; "timeout" or "silent" if the guest was
    killed for running past deadline or printing nothing for silence_limit seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = sys.stdout.buffer
    last_output = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            _kill_group(proc)
            return "timeout"
        if now - last_output >= silence_limit:
            _kill_group(proc)
            return "silent"
        wait = min(deadline - now, silence_limit - (now - last_output), 5.0)
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return ""
        last_output = time.monotonic()
        out.write(chunk.replace(b"\r\n", b"\n"))
        out.flush()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- inside the guest ------------------------------------------------------------------------

def cgroup_v2_only(mounts_text: str, fstype: str) -> str | None:
    """None when the guest is cgroup v2 only, else what is wrong."""
    if fstype != "cgroup2fs":
        return f"/sys/fs/cgroup is {fstype}, not cgroup2fs"
    v1 = [line.split()[1] for line in mounts_text.splitlines() if line.split()[2:3] == ["cgroup"]]
    if v1:
        return f"cgroup v1 hierarchies are mounted: {', '.join(v1)}"
    return None


def guest_env(base: dict[str, str], scratch: str, color: bool) -> dict[str, str]:
    venv_bin = str(CHECKOUT / ".venv" / "bin")
    env = {k: v for k, v in base.items() if not k.startswith("virtme")}
    env.update({
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TMPDIR": f"{scratch}/tmp",
        "HOME": f"{scratch}/home",
        "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is read-only in here
        "COLUMNS": env.get("COLUMNS", "120"),
        "LANG": "C.UTF-8",
        # tests that wait for a daemon to come up allow for the emulation's slowness
        "CRI_SHIM_TEST_TIME_SCALE": env.get("CRI_SHIM_TEST_TIME_SCALE", "10"),
    })
    if not color:
        env["PY_COLORS"] = "0"
    return env


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def python_home(checkout: Path = CHECKOUT) -> str | None:
    """The installation the venv's python comes from (pyvenv.cfg's home, one level up)."""
    try:
        cfg = (checkout / ".venv" / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return str(Path(value.strip()).parent)
    return None


def cached_binds(checkout: Path = CHECKOUT) -> list[str]:
    """Read-only trees to see through the cached 9p mount: programs, Python, the checkout."""
    binds = ["/usr", str(checkout)]
    home = python_home(checkout)
    if home and not any(home == b or home.startswith(b + "/") for b in binds):
        binds.append(home)
    return binds


def guest_bootstrap(binds: list[str], guest_argv: list[str]) -> str:
    """The guest's first command, in sh: the cached view of the host before any Python starts."""
    q = shlex.quote
    lines = [
        f"mkdir -p {q(GUEST_CACHED_ROOT)}",
        f"if mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=524288 "
        f"{q(CACHED_TAG)} {q(GUEST_CACHED_ROOT)}; then",
        *[f"  mount --bind {q(GUEST_CACHED_ROOT + b)} {q(b)} || exit {NOT_RUN}" for b in binds],
        "else",
        "  echo 'vm-tests (guest): no cached view of the host: the tests run, slowly'",
        "fi",
        f"exec {shlex.join(guest_argv)}",
    ]
    return "\n".join(lines)


def prepare_guest() -> None:
    """tmpfs for everything written, loopback up, the state dirs the daemon and tools use."""
    os.makedirs(GUEST_SCRATCH, exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "vm-tests", GUEST_SCRATCH)
    for d in ("tmp", "home", "cni-lib"):
        os.makedirs(f"{GUEST_SCRATCH}/{d}", mode=0o1777 if d == "tmp" else 0o755)
    # /var is an overlay on 9p here: bind the dirs CNI plugins and runtimes use onto tmpfs
    for target, source in (("/var/lib/cni", "cni-lib"),):
        os.makedirs(target, exist_ok=True)
        _sh("mount", "--bind", f"{GUEST_SCRATCH}/{source}", target)
    _sh("ip", "link", "set", "lo", "up")


def run_guest(results: Path) -> int:
    request = json.loads((results / REQUEST_FILE).read_text())
    fstype = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True,
                            text=True).stdout.strip()
    problem = cgroup_v2_only(Path("/proc/mounts").read_text(), fstype)
    if problem:
        (results / NOT_RUN_FILE).write_text(f"not a cgroup v2 only guest: {problem}\n")
        return NOT_RUN  # no status file: the host reports that the lane did not run
    controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().strip()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    print(f"vm-tests (guest): kernel {os.uname().release}, cgroup2fs with {controllers}; "
          f"up {uptime:.1f}s, {time.time() - request['started']:.0f}s since launch", flush=True)
    prepare_guest()
    env = guest_env(dict(os.environ), GUEST_SCRATCH, request.get("color", False))
    cmd = [str(CHECKOUT / ".venv" / "bin" / "python"), "-m", "pytest", *request["pytest_args"]]
    t0 = time.monotonic()
    status = subprocess.run(cmd, cwd=CHECKOUT, env=env, stdin=subprocess.DEVNULL).returncode
    print(f"vm-tests (guest): pytest took {time.monotonic() - t0:.0f}s", flush=True)
    (results / STATUS_FILE).write_text(f"{status}\n")
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["--guest"]:
        return run_guest(Path(argv[1]))
    try:
        opts = parse_args(argv)
    except UsageError as e:
        say(f"{e} (see --help)")
        return BAD_USAGE
    if opts.help:
        print(__doc__.strip())
        return 0
    try:
        return run_host(opts)
    except NotRunnable as e:
        say(f"cannot run the cgroup v2 lane: {e}")
        return NOT_RUN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
