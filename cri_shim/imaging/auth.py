"""Registry authentication, sans-IO: challenge parsing and credential selection."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse a WWW-Authenticate header (one challenge, as registries send)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {}
    for m in _PARAM.finditer(rest):
        key = m.group(1) or m.group(3)
        params[key.lower()] = m.group(2) if m.group(1) else m.group(4)
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # OAuth2 refresh token
    registry_token: str = ""  # a bearer token to use as is

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)


def from_auth_config(username: str, password: str, auth: str, identity_token: str,
                     registry_token: str) -> Credentials:
    if auth and not username:
        try:
            username, _, password = base64.b64decode(auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            username = password = ""
    return Credentials(username, password, identity_token, registry_token)


def from_auth_file(path: str, registry: str) -> Credentials:
    """A docker-style config.json {"auths": {"host": {"auth": b64(user:pass)}}}."""
    if not path:
        return Credentials()
    try:
        auths = json.loads(Path(path).read_text()).get("auths", {})
    except (OSError, ValueError):
        return Credentials()
    for key in (registry, f"https://{registry}", f"http://{registry}"):
        entry = auths.get(key)
        if isinstance(entry, dict):
            return from_auth_config(entry.get("username", ""), entry.get("password", ""),
                                    entry.get("auth", ""), entry.get("identitytoken", ""),
                                    entry.get("registrytoken", ""))
    return Credentials()


def basic_header(c: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
