"""Writing a file so a crash leaves either the old or the new content, never a mix.

Also the modes of what the daemon keeps: its root and state directories and every file
that holds configuration (container specs with env values, which is how Kubernetes
Secrets often arrive; pod configs; CNI results) are for root only.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create path (and parents) if needed, and make it root-only even if it existed."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Temp file beside path, fsync, rename over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
