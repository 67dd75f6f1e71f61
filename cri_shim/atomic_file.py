"""Writing the daemon's files, and the modes of what it keeps.

Every file cri_shim replaces goes through `write_atomic` (temp file, fsync, rename, fsync the
directory: oci/atomic_file.py, the one writer both layers share), or through `commit` when the
content streams into a temp file first.

The modes: the daemon's root and state directories and every file that holds configuration
(container specs with env values, which is how Kubernetes Secrets often arrive; pod configs;
CNI results) are for root only. Pod files that containers bind-mount (hosts, resolv.conf,
hostname) stay 0644, readable by any user inside the container.
"""

from __future__ import annotations

import os
from pathlib import Path

from oci import atomic_file as _writer
from oci.atomic_file import commit, fsync_dir

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "SHARED_FILE", "commit", "fsync_dir", "private_dir",
           "write_atomic"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SHARED_FILE = 0o644


def private_dir(path: Path) -> Path:
    """Create path (and parents) if needed, and make it root-only even if it existed."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_atomic(path: Path, data: bytes | str, mode: int = SHARED_FILE, *,
                 tmp_dir: Path | None = None, durable: bool = True) -> None:
    """Create path's directory if needed, then write path atomically with exactly `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _writer.write_atomic(path, data, mode, tmp_dir=tmp_dir, durable=durable)
