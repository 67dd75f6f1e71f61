#!/bin/sh
# Prepare a Debian/Ubuntu host for cri-shim and its tests. Idempotent: run it as
# often as you like; it only installs or changes what is missing.
#   - OS packages: OCI runtimes, conmon, catatonit, CNI plugins, and test needs
#   - the project virtualenv in .venv with cri-shim installed (editable) plus dev tools
#   - cgroups: in hybrid mode, give controllers that are only on the cgroup2 root
#     (typically hugetlb) a v1 mount, because crun refuses hybrid hosts otherwise
#   - a default CNI bridge network in /etc/cni/net.d when that directory has none
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

[ "$(id -u)" = 0 ] || { echo "setup-host.sh: run as root" >&2; exit 1; }

PACKAGES="runc crun conmon catatonit containernetworking-plugins criu iptables iproute2
util-linux procps libseccomp2 docker-registry skopeo umoci busybox-static apache2-utils python3-venv
systemd openssl podman"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup-host: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
# Debian enables the registry as a service on install; tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# --- virtualenv ---------------------------------------------------------------
py=${PYTHON:-python3}
if [ ! -x "$here/.venv/bin/python" ]; then
    "$py" -m venv "$here/.venv"
fi
stamp="$here/.venv/.cri-shim-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
    # "compat" editable mode puts the checkout on sys.path with a plain .pth entry instead
    # of an import-hook finder: every pyrunc command (three per container) starts ~13 ms
    # faster, which matters for a runtime that conmon execs per operation.
    "$here/.venv/bin/pip" install -q -e "$here[dev]" --config-settings editable_mode=compat
    # Reference descriptor for the wire-compatibility test; it pins an old protobuf,
    # so it comes without its dependencies and is never imported.
    "$here/.venv/bin/pip" install -q --no-deps container-runtime-interface-api
    touch "$stamp"
fi
# pyrunc's launcher replaces the generic console script pip writes (which imports `re`, ~8 ms,
# and runs under site, which processes every .pth, ~4 ms): conmon and cri-shim start pyrunc
# several times per container. -I -S: no site, no environment, no script directory on
# sys.path; the checkout is all it needs beside the standard library. Rewritten every run,
# since a reinstall above puts pip's script back.
# Since it needs nothing from the virtualenv, it runs under the distribution's python3 when that
# is 3.11 or newer: Debian builds it with PGO and LTO and links libpython into the executable,
# so it starts in ~11 ms where a default source build (pyenv's, a shared libpython, no PGO)
# takes ~14, and runs pyrunc's own code faster too (hack/bench_oci.py).
pyrunc_py="$here/.venv/bin/python"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -IS -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    pyrunc_py=/usr/bin/python3
fi
cat > "$here/.venv/bin/pyrunc.tmp" <<EOF
#!$pyrunc_py -IS
import sys
sys.path.insert(0, "$here")
from oci.pyrunc.cli import main
main()
EOF
chmod 755 "$here/.venv/bin/pyrunc.tmp"
mv -f "$here/.venv/bin/pyrunc.tmp" "$here/.venv/bin/pyrunc"

# --- cgroups ------------------------------------------------------------------
fstype=$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || echo none)
if [ "$fstype" = tmpfs ] && [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
    for ctrl in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
        if ! grep -qE "^cgroup /sys/fs/cgroup/[^ ]* cgroup [^ ]*\b$ctrl\b" /proc/mounts; then
            echo "setup-host: giving cgroup controller $ctrl a v1 mount (hybrid mode)"
            mkdir -p "/sys/fs/cgroup/$ctrl"
            mount -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl"
        fi
    done
fi

# --- CNI ----------------------------------------------------------------------
mkdir -p /etc/cni/net.d
# podman (above, for tests/e2e/test_podman.py) ships a network of its own, 87-podman-bridge.conflist;
# it does not count: cri-shim still gets its default network
if [ -z "$(find /etc/cni/net.d -maxdepth 1 \( -name '*.conf*' -o -name '*.json' \) \
        ! -name 87-podman-bridge.conflist | head -1)" ]; then
    echo "setup-host: installing the default CNI network /etc/cni/net.d/10-cri-shim.conflist"
    cat > /etc/cni/net.d/10-cri-shim.conflist <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "cri-shim",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "crishim0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.88.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
fi
# --- the cgroup v2 lane (hack/vm-tests.py), when asked for -------------------------
# CRI_SHIM_VM_TESTS=1: QEMU and Debian's stock kernel (which mounts only cgroup2) for the
# guest, and virtme-ng in a virtualenv of its own, .venv/vng, so its dependencies stay out
# of the project's.
if [ -n "${CRI_SHIM_VM_TESTS:-}" ] && [ "$CRI_SHIM_VM_TESTS" != 0 ]; then
    VM_PACKAGES="qemu-system-x86 linux-image-amd64"
    missing=""
    for p in $VM_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup-host: installing for the cgroup v2 lane:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing
    fi
    VNG_VERSION=1.42
    if ! "$here/.venv/vng/bin/vng" --version 2>/dev/null | grep -qx "virtme-ng $VNG_VERSION"; then
        echo "setup-host: installing virtme-ng $VNG_VERSION in .venv/vng"
        "$py" -m venv "$here/.venv/vng"
        "$here/.venv/vng/bin/pip" install -q "virtme-ng==$VNG_VERSION"
    fi
fi
# what the host still lacks, if anything: the same report an operator gets from `cri-shim doctor`
if ! "$here/.venv/bin/cri-shim" doctor; then
    echo "setup-host: cri-shim doctor reports blocking problems (above); containers may not start" >&2
fi
echo "setup-host: ready"
