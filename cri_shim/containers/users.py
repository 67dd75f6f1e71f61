"""Resolving users and groups inside an image's root file system.

Names are looked up in the rootfs's /etc/passwd and /etc/group, never the host's;
the files are read without following symlinks out of the rootfs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim.errors import InvalidArgument


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    name: str = ""


def _read_inside(rootfs: Path, rel: str) -> str:
    """Read rootfs/rel; a symlink anywhere on the way yields '' (treated as absent)."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel.strip("/").split("/")[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        last = rel.rsplit("/", 1)[-1]
        ffd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        with os.fdopen(ffd, errors="replace") as f:
            return f.read(4 << 20)
    except OSError:
        return ""
    finally:
        os.close(fd)


def parse_passwd(text: str) -> list[tuple[str, int, int]]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            out.append((parts[0], int(parts[2]), int(parts[3])))
    return out


def parse_group(text: str) -> list[tuple[str, int, list[str]]]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            members = [m for m in (parts[3].split(",") if len(parts) > 3 else []) if m]
            out.append((parts[0], int(parts[2]), members))
    return out


def resolve(rootfs: Path, user: str, group: str | None = None, *, what: str = "user") -> ResolvedUser:
    """Resolve `user` (name or uid) and optional `group` (name or gid) in the rootfs.

    A numeric uid need not exist in /etc/passwd (its gid is then 0, as runc does); a
    name that does not exist is an InvalidArgument naming it.
    """
    passwd = parse_passwd(_read_inside(rootfs, "etc/passwd"))
    groups = parse_group(_read_inside(rootfs, "etc/group"))
    if user.isdigit():
        uid = int(user)
        match = next((p for p in passwd if p[1] == uid), None)
        name = match[0] if match else ""
        gid = match[2] if match else 0
    else:
        match = next((p for p in passwd if p[0] == user), None)
        if match is None:
            raise InvalidArgument(f"{what} {user!r} not found in the image's /etc/passwd")
        name, uid, gid = match
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g[0] == group), None)
            if g is None:
                raise InvalidArgument(f"group {group!r} not found in the image's /etc/group")
            gid = g[1]
    extra = sorted({g[1] for g in groups if name and name in g[2] and g[1] != gid})
    return ResolvedUser(uid, gid, extra, name)


def split_image_user(spec: str) -> tuple[str, str | None]:
    """An image USER: 'name', 'uid', 'name:group', 'uid:gid'."""
    user, _, group = spec.partition(":")
    return user, (group or None)
