#!/usr/bin/env bash
# critest.sh - run the CRI conformance suite (critest, cri-tools v1.36) against a
# throw-away cri-shim daemon, once per runtime handler, with images from a local mirror.
#
# Usage (as root, from anywhere in a checkout set up by hack/setup-host.sh):
#   hack/critest.sh [--handlers runc,crun,pyrunc] [--focus REGEX] [--mirror URL]
#                   [--results DIR] [--verbose] [--] [EXTRA_CRITEST_ARGS...]
#
#   --handlers  comma-separated CRI runtime handlers to test, one critest run each
#               (default runc,crun,pyrunc); each is a [runtimes.NAME] whose binary is NAME
#   --focus     only specs matching REGEX (critest --ginkgo.focus)
#   --mirror    registry holding the images critest pulls, under their real repository
#               paths (default http://127.0.0.1:5000); registry.k8s.io, k8s.gcr.io,
#               gcr.io and docker.io are all answered from it
#   --results   where logs and reports go (default
#               ${CRITEST_RESULTS:-/var/tmp/cri-shim-critest}/<UTC time>)
#   --verbose   also show critest's output as it runs (it always goes to HANDLER.txt)
#   Any other argument, and everything after --, is passed to critest unchanged
#   (e.g. --ginkgo.skip REGEX, --ginkgo.v, --ginkgo.timeout 60m).
#
# critest must be on PATH (it is not packaged for Debian 12: build cri-tools v1.36.0
# yourself, outside this repository). The mirror must serve the stand-in images critest
# uses (registry.k8s.io/pause:3.9, registry.k8s.io/e2e-test-images/..., and
# gcr.io/k8s-staging-cri-tools/...); if it does not answer and the critest harness's
# mirror.sh is beside the checkout (../shared/critest), it is started.
#
# The daemon gets a temporary socket, state_dir and root_dir, and a CNI network of its
# own like the containerd baseline's (bridge crishimct0, 10.89.0.0/16, no masquerade;
# CNI_CONF_DIR=DIR uses DIR's instead, e.g. /etc/cni/net.d). The script refuses to start
# when another runtime's pods sit on that network's bridge or its subnet is routed
# through another device (containerd's baseline uses the same subnet). After the runs
# it removes the pods critest left, stops the daemon, and removes the temporary dirs.
#
# Results, in the results dir: HANDLER.txt (critest output), HANDLER.json (ginkgo
# report), daemon.log, config.toml, summary.txt (printed at the end: per handler the
# pass/fail/skip counts, the duration, and each failed spec with the first line of its
# failure). Exit status 0 when every handler passed, 1 when a spec failed, 2 on a
# set-up error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$ROOT/.venv/bin/python
CRI_SHIM=$ROOT/.venv/bin/cri-shim
# Empty: a network of the script's own, like the containerd baseline's (bridge with
# hairpin and no masquerade, portmap, loopback), on its own bridge and subnet.
CNI_CONF_DIR=${CNI_CONF_DIR:-}

HANDLERS=runc,crun,pyrunc
FOCUS=
MIRROR=http://127.0.0.1:5000
RESULTS=
VERBOSE=0
EXTRA=()

die() { echo "critest.sh: $*" >&2; exit 2; }
say() { echo "critest.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
    --handlers) [ $# -ge 2 ] || die "--handlers needs a value"; HANDLERS=$2; shift 2 ;;
    --handlers=*) HANDLERS=${1#*=}; shift ;;
    --focus) [ $# -ge 2 ] || die "--focus needs a value"; FOCUS=$2; shift 2 ;;
    --focus=*) FOCUS=${1#*=}; shift ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a value"; MIRROR=$2; shift 2 ;;
    --mirror=*) MIRROR=${1#*=}; shift ;;
    --results) [ $# -ge 2 ] || die "--results needs a value"; RESULTS=$2; shift 2 ;;
    --results=*) RESULTS=${1#*=}; shift ;;
    --verbose) VERBOSE=1; shift ;;
    -h | --help) sed -n '2,37p' "$0"; exit 0 ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) EXTRA+=("$1"); shift ;;
    esac
done
MIRROR=${MIRROR%/}

# ---- preconditions -------------------------------------------------------------------
command -v critest >/dev/null 2>&1 || die "critest is not on PATH. It is the conformance
suite of kubernetes-sigs/cri-tools (v1.36.0, cmd/critest), not packaged for Debian 12:
build it outside this repository and put it on PATH, then run this again."
[ "$(id -u)" = 0 ] || die "must run as root (the daemon mounts, creates namespaces and runs CNI)"
if [ ! -x "$CRI_SHIM" ] || [ ! -x "$PY" ]; then
    die "$CRI_SHIM not found: run hack/setup-host.sh first"
fi
case $MIRROR in
http://* | https://*) ;;
*) die "--mirror must be a URL such as http://127.0.0.1:5000, got $MIRROR" ;;
esac
IFS=, read -r -a HANDLER_LIST <<<"$HANDLERS"
[ ${#HANDLER_LIST[@]} -gt 0 ] || die "--handlers is empty"
for h in "${HANDLER_LIST[@]}"; do
    [[ $h =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "bad handler name '$h'"
done

# The registries critest v1.36 pulls from (images named without a registry get
# registry.k8s.io prepended by critest itself; docker.io is mapped for completeness).
REGISTRIES=(registry.k8s.io k8s.gcr.io gcr.io docker.io)

mirror_up() { "$PY" - "$MIRROR" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v2/")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(req, timeout=5).close()
except Exception as e:
    sys.exit(f"{sys.argv[1]}/v2/: {e}")
EOF
}
if ! mirror_up 2>/dev/null; then
    harness_mirror=$ROOT/../shared/critest/mirror.sh
    if [ "$MIRROR" = http://127.0.0.1:5000 ] && [ -x "$harness_mirror" ]; then
        say "no registry at $MIRROR; starting it with $harness_mirror"
        "$harness_mirror" >&2 || die "$harness_mirror failed"
    fi
    mirror_up || die "no registry answers at $MIRROR (start one holding critest's images, see --help)"
fi

# ---- work dirs, helper ---------------------------------------------------------------
RESULTS=${RESULTS:-${CRITEST_RESULTS:-/var/tmp/cri-shim-critest}/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
TMPD=$(mktemp -d "${TMPDIR:-/var/tmp}/cri-shim-critest.XXXXXX")
SOCK=$TMPD/cri-shim.sock
STATE=$TMPD/state
CRIROOT=$TMPD/root
CONF=$RESULTS/config.toml
DAEMON_LOG=$RESULTS/daemon.log
HELPER=$TMPD/helper.py
DAEMON_PID=

# One Python helper (the checkout's venv, which has grpc and the generated CRI stubs):
#   cni-check DIR          the pod network's bridge must not carry another runtime's pods
#   ready SOCK TIMEOUT     wait until the daemon answers Version
#   remove-pods SOCK       stop and remove every pod sandbox (critest leaves some on failures)
#   summary NAME JSON TXT SECONDS   counts and failures of one critest run
cat >"$HELPER" <<'EOF'
import ipaddress, json, os, re, subprocess, sys, time
from pathlib import Path

def cni_check(conf_dir):
    files = sorted(p for p in Path(conf_dir).iterdir()
                   if p.suffix in (".conflist", ".conf", ".json") and p.is_file())
    for path in files:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        plugins = raw.get("plugins") or [raw]
        break
    else:
        sys.exit(f"no CNI network configuration in {conf_dir}")
    print(f"CNI network {raw.get('name')!r} from {path}")
    for p in plugins:
        if p.get("type") != "bridge":
            continue
        bridge = p.get("bridge") or "cni0"
        ipam = p.get("ipam") or {}
        subnets = [r.get("subnet") for rs in ipam.get("ranges") or [] for r in rs]
        if ipam.get("subnet"):
            subnets.append(ipam["subnet"])
        ports = subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                               capture_output=True, text=True).stdout.strip().splitlines()
        if ports:
            sys.exit(f"bridge {bridge} already has {len(ports)} interface(s) attached: another "
                     "runtime's pods use this network; stop it (or its pods) first")
        for s in filter(None, subnets):
            net = ipaddress.ip_network(s, strict=False)
            routes = subprocess.run(["ip", "-o", "-4" if net.version == 4 else "-6", "route"],
                                    capture_output=True, text=True).stdout.splitlines()
            for line in routes:
                dst, _, rest = line.partition(" ")
                m = re.search(r"\bdev (\S+)", rest)
                try:
                    other = ipaddress.ip_network(dst, strict=False)
                except ValueError:
                    continue
                if m and m.group(1) != bridge and other.prefixlen > 0 and net.overlaps(other):
                    sys.exit(f"subnet {s} of bridge {bridge} overlaps {dst} on {m.group(1)}: another "
                             "runtime's network (e.g. a containerd baseline) is up; stop it first")
        print(f"bridge {bridge} ({', '.join(filter(None, subnets)) or 'no subnet'}) is free")

def channel(sock):
    import grpc
    return grpc.insecure_channel(f"unix:{sock}")

def ready(sock, timeout):
    import grpc
    from cri_shim.criapi import api_pb2 as pb, api_pb2_grpc
    deadline = time.monotonic() + float(timeout)
    last = ""
    while time.monotonic() < deadline:
        if os.path.exists(sock):
            try:
                with channel(sock) as ch:
                    v = api_pb2_grpc.RuntimeServiceStub(ch).Version(pb.VersionRequest(), timeout=3)
                print(f"{v.runtime_name} {v.runtime_version} (CRI {v.runtime_api_version})")
                return
            except grpc.RpcError as e:
                last = str(e.details())
        time.sleep(0.2)
    sys.exit(f"daemon did not answer on {sock} within {timeout}s {last}")

def remove_pods(sock):
    from cri_shim.criapi import api_pb2 as pb, api_pb2_grpc
    with channel(sock) as ch:
        rt = api_pb2_grpc.RuntimeServiceStub(ch)
        pods = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
        for p in pods:
            for call, req in ((rt.StopPodSandbox, pb.StopPodSandboxRequest),
                              (rt.RemovePodSandbox, pb.RemovePodSandboxRequest)):
                try:
                    call(req(pod_sandbox_id=p.id), timeout=60)
                except Exception as e:  # best effort: report and go on
                    print(f"  pod {p.id[:12]}: {call._method.decode()}: {e}", file=sys.stderr)
        if pods:
            print(f"removed {len(pods)} pod(s) left by critest")

ANSI = re.compile(r"\x1b\[[0-9;]*m")

def first_line(msg, width=240):
    keep = []
    for line in ANSI.sub("", msg or "").splitlines():
        t = line.strip()
        if t.startswith("<*") or t == "{":
            continue
        if t == "occurred" or t.startswith("s: {"):
            break
        if t:
            keep.append(t)
        if len(" ".join(keep)) > width:
            break
    text = " ".join(keep)
    return text if len(text) <= width else text[: width - 3] + "..."

def summary(name, report, txt, seconds):
    mins, secs = divmod(int(float(seconds)), 60)
    took = f"{mins}m{secs:02d}s"
    try:
        suites = json.loads(Path(report).read_text())
    except (OSError, ValueError) as e:
        tail = Path(txt).read_text(errors="replace").splitlines()[-5:] if os.path.exists(txt) else []
        print(f"{name}: no ginkgo report ({e}); critest ran {took}; last output:")
        for line in tail:
            print(f"    {line}")
        return
    passed = failed = own_skip = unselected = total = 0
    failures, suite_errors, skip_reasons = [], [], {}
    for suite in suites:
        total += suite.get("PreRunStats", {}).get("TotalSpecs", 0)
        for spec in suite.get("SpecReports") or []:
            state = spec.get("State")
            msg = (spec.get("Failure") or {}).get("Message", "")
            if spec.get("LeafNodeType") != "It":
                if state not in ("passed", "skipped"):
                    suite_errors.append(f"{spec.get('LeafNodeType')} {state}: {first_line(msg)}")
                continue
            title = " ".join((spec.get("ContainerHierarchyTexts") or []) + [spec.get("LeafNodeText", "")])
            if state == "passed":
                passed += 1
            elif state == "skipped":
                if msg:
                    own_skip += 1
                    reason = first_line(msg, 100)
                    skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
                else:
                    unselected += 1
            elif state == "pending":
                unselected += 1
            else:
                failed += 1
                failures.append((title.strip(), state, first_line(msg)))
    skipped = own_skip + unselected
    print(f"{name}: {passed} passed, {failed} failed, {skipped} skipped of {total} specs "
          f"({own_skip} skipped by the spec, {unselected} not selected) in {took}")
    for e in suite_errors:
        print(f"  suite node {e}")
    for reason, n in sorted(skip_reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped x{n}: {reason}")
    for title, state, msg in sorted(failures):
        print(f"  FAILED {title}")
        print(f"      [{state}] {msg}")

cmd, *args = sys.argv[1:]
{"cni-check": cni_check, "ready": ready, "remove-pods": remove_pods, "summary": summary}[cmd](*args)
EOF

# ---- clean-up --------------------------------------------------------------------------
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? pid pids dir h bin id
    trap - EXIT INT TERM
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        timeout 300 "$PY" "$HELPER" remove-pods "$SOCK" >&2 || say "could not remove the pods left"
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    # Containers the daemon could not remove: delete them through their runtime (conmon
    # outlives the daemon by design), then end any process still naming our dirs.
    for dir in "$STATE"/runtimes/*/; do
        [ -d "$dir" ] || continue
        h=$(basename "$dir")
        bin=$h
        [ -x "$ROOT/.venv/bin/$h" ] && bin=$ROOT/.venv/bin/$h
        command -v "$bin" >/dev/null 2>&1 || continue
        for id in "$dir"*/; do
            [ -d "$id" ] || continue
            timeout 30 "$bin" --root "$dir" delete --force "$(basename "$id")" >/dev/null 2>&1 || true
        done
    done
    pids=$(grep -lsF "$TMPD/" /proc/[0-9]*/cmdline | cut -d/ -f3) || true
    for pid in $pids; do
        if [ "$pid" != $$ ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    # Unmount what is left under the temp dir (overlay roots, namespace pins, /dev/shm),
    # deepest first, then remove it without crossing into any mount that stays.
    awk -v p="$TMPD/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    if [ "$CNI_CONF_DIR" = "$TMPD/net.d" ]; then
        ip link del crishimct0 2>/dev/null || true  # the script's own bridge
    fi
    rm -rf --one-file-system "$TMPD" 2>/dev/null || say "could not remove all of $TMPD"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- network check -------------------------------------------------------------------
if [ -z "$CNI_CONF_DIR" ]; then
    CNI_CONF_DIR=$TMPD/net.d
    mkdir -p "$CNI_CONF_DIR"
    cat >"$CNI_CONF_DIR/10-critest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "cri-shim-critest",
  "plugins": [
    {"type": "bridge", "bridge": "crishimct0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": "$TMPD/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
fi
"$PY" "$HELPER" cni-check "$CNI_CONF_DIR" >&2 || die "CNI network check failed (see above)"

# ---- configuration -----------------------------------------------------------------------
toml_str() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

write_config() { # $1 = 1 to include [images] servers
    local h r mirrors="" servers=""
    for r in "${REGISTRIES[@]}"; do
        mirrors+="${mirrors:+, }$(toml_str "$r") = [$(toml_str "$MIRROR")]"
        servers+="${servers:+, }$(toml_str "$r") = $(toml_str "$MIRROR")"
    done
    {
        echo "# generated by hack/critest.sh"
        echo "socket = $(toml_str "$SOCK")"
        echo "state_dir = $(toml_str "$STATE")"
        echo "root_dir = $(toml_str "$CRIROOT")"
        echo "log_level = \"info\""
        echo "default_runtime = $(toml_str "${HANDLER_LIST[0]}")"
        for h in "${HANDLER_LIST[@]}"; do
            echo
            echo "[runtimes.$h]"
            echo "binary = $(toml_str "$h")"
        done
        echo
        echo "[cni]"
        echo "conf_dir = $(toml_str "$CNI_CONF_DIR")"
        echo
        echo "[images]"
        echo "mirrors = {$mirrors}"
        if [ "$1" = 1 ]; then echo "servers = {$servers}"; fi
    } >"$CONF"
}

# Prefer [images] servers (the registry replaced by the mirror, no fallback to the real
# host) and keep mirrors for daemons that predate it. An older daemon rejects unknown
# keys ("config: unknown key images.'servers'"): then use mirrors only, where a miss
# (e.g. critest's pinned-digest image, which no mirror has) falls back to the real
# registry; the proxy variables below keep that fallback on loopback.
write_config 1
if ! out=$("$CRI_SHIM" config --config "$CONF" 2>&1 >/dev/null); then
    if grep -q "unknown key images.'servers'" <<<"$out"; then
        say "this cri-shim has no [images] servers; mapping the registries with mirrors only"
        write_config 0
        out=$("$CRI_SHIM" config --config "$CONF" 2>&1 >/dev/null) ||
            die "generated config $CONF rejected: $out"
    else
        die "generated config $CONF rejected: $out"
    fi
fi

# No registry lookup of the daemon may leave the machine: whatever is not the mirror goes
# to a proxy address where nothing listens, so it fails at once instead of resolving a
# real host. Only the daemon gets these (critest itself must reach the pods directly).
mirror_host=${MIRROR#*://}
mirror_host=${mirror_host%%/*}
mirror_host=${mirror_host%:*}
dead_proxy=http://127.0.0.1:9
no_proxy_list=127.0.0.1,localhost,::1,$mirror_host
DAEMON_ENV=(PATH="$ROOT/.venv/bin:$PATH" PYTHONUNBUFFERED=1
    "HTTPS_PROXY=$dead_proxy" "HTTP_PROXY=$dead_proxy" "ALL_PROXY=$dead_proxy" "NO_PROXY=$no_proxy_list"
    "https_proxy=$dead_proxy" "http_proxy=$dead_proxy" "all_proxy=$dead_proxy" "no_proxy=$no_proxy_list")

# ---- daemon --------------------------------------------------------------------------
say "results in $RESULTS"
say "starting cri-shim on $SOCK (state $STATE, root $CRIROOT)"
env "${DAEMON_ENV[@]}" "$CRI_SHIM" serve --config "$CONF" >"$DAEMON_LOG" 2>&1 </dev/null &
DAEMON_PID=$!
if ! version=$("$PY" "$HELPER" ready "$SOCK" 60); then
    tail -n 20 "$DAEMON_LOG" >&2
    die "cri-shim did not come up (log: $DAEMON_LOG)"
fi
say "daemon pid $DAEMON_PID: $version"

# ---- critest, once per handler ----------------------------------------------------------
ARGS=(--runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK"
    --ginkgo.no-color --ginkgo.flake-attempts 1 --ginkgo.timeout 40m)
[ -n "$FOCUS" ] && ARGS+=(--ginkgo.focus "$FOCUS")

# critest talks to pod IPs (10.88.x.y) over HTTP: a proxy from the caller's environment
# would break the networking specs.
unset HTTPS_PROXY HTTP_PROXY ALL_PROXY https_proxy http_proxy all_proxy

SUMMARY=$RESULTS/summary.txt
{
    echo "critest $(critest --version 2>/dev/null | awk '/version/{print $NF; exit}') against $version"
    echo "mirror $MIRROR; handlers ${HANDLER_LIST[*]}; $(uname -r), $(nproc) cpus"
} >"$SUMMARY"
status=0
for h in "${HANDLER_LIST[@]}"; do
    txt=$RESULTS/$h.txt
    json=$RESULTS/$h.json
    rm -f "$json"
    say "critest --runtime-handler $h (output: $txt)"
    echo "# critest ${ARGS[*]} --runtime-handler $h --ginkgo.json-report $json ${EXTRA[*]}" >"$txt"
    start=$(date +%s)
    rc=0
    # critest creates temporary dirs relative to its working directory.
    if [ $VERBOSE = 1 ]; then
        (cd "$RESULTS" && critest "${ARGS[@]}" --runtime-handler "$h" \
            --ginkgo.json-report "$json" "${EXTRA[@]}" 2>&1) | tee -a "$txt" || rc=$?
    else
        (cd "$RESULTS" && critest "${ARGS[@]}" --runtime-handler "$h" \
            --ginkgo.json-report "$json" "${EXTRA[@]}") >>"$txt" 2>&1 || rc=$?
    fi
    secs=$(($(date +%s) - start))
    echo "# critest exit status $rc after ${secs}s" >>"$txt"
    [ "$rc" = 0 ] || status=1
    "$PY" "$HELPER" summary "$h" "$json" "$txt" "$secs" | tee -a "$SUMMARY" >&2
    kill -0 "$DAEMON_PID" 2>/dev/null || die "cri-shim died during the $h run (log: $DAEMON_LOG)"
done

echo
cat "$SUMMARY"
exit "$status"
