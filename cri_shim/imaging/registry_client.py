"""An async client for the OCI distribution API: manifests and blobs, with auth.

Plain http is used for localhost, 127.0.0.1 and registries configured insecure;
everything else is https with the system CAs. Mirrors are tried in order before
the registry itself.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from cri_shim.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated, Unavailable
from cri_shim.imaging.auth import Credentials, basic_header, parse_challenge
from cri_shim.imaging.reference import DOCKER_HUB, Reference

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
MAX_MANIFEST = 4 << 20


def registry_host(domain: str) -> str:
    return "registry-1.docker.io" if domain == DOCKER_HUB else domain


def base_urls(domain: str, insecure: list[str], mirrors: dict[str, list[str]],
              servers: dict[str, str] | None = None) -> list[str]:
    """Endpoints to try in order: the mirrors, then the server that stands for the registry
    when one is configured, else the registry itself."""
    host = registry_host(domain)
    plain = host.split(":")[0] in ("localhost", "127.0.0.1", "::1") or domain in insecure or host in insecure
    urls = [m.rstrip("/") for m in mirrors.get(domain, [])]
    server = (servers or {}).get(domain)
    urls.append(server.rstrip("/") if server else ("http://" if plain else "https://") + host)
    return urls


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The TLS context every registry client shares. Making one loads the whole CA bundle
    (about 25 ms); it was made for every pull, half the event loop's time in a small pull."""
    global _TLS
    if _TLS is None:
        _TLS = httpx.create_ssl_context()
    return _TLS


class RegistryClient:
    def __init__(self, ref: Reference, creds: Credentials, insecure: list[str],
                 mirrors: dict[str, list[str]], timeout: float,
                 servers: dict[str, str] | None = None) -> None:
        self.ref = ref
        self.creds = creds
        self.urls = base_urls(ref.domain, insecure, mirrors, servers)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                        verify=tls_context())
        self._auth: dict[str, str] = {}  # base url -> Authorization header value

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _token(self, challenge_params: dict[str, str]) -> str:
        realm = challenge_params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise Unauthenticated(f"registry {self.ref.domain}: bad token realm {realm!r}")
        params = {k: v for k, v in challenge_params.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.ref.path}:pull")
        headers = {}
        if self.creds.username:
            headers["Authorization"] = basic_header(self.creds)
        r = await self.client.get(realm, params=params, headers=headers)
        if r.status_code in (401, 403):
            raise Unauthenticated(f"registry {self.ref.domain}: credentials rejected by {realm}")
        if r.status_code != 200:
            raise Unavailable(f"registry {self.ref.domain}: token endpoint answered {r.status_code}")
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthenticated(f"registry {self.ref.domain}: token endpoint gave no token")
        return str(token)

    async def _send(self, base: str, path: str, accept: str, stream: bool) -> httpx.Response:
        url = f"{base}/v2/{self.ref.path}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept}
            if base in self._auth:
                headers["Authorization"] = self._auth[base]
            req = self.client.build_request("GET", url, headers=headers)
            resp = await self.client.send(req, stream=stream)
            if resp.status_code != 401 or attempt == 1:
                return resp
            challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
            await resp.aclose()
            if challenge is None:
                return resp
            if self.creds.registry_token:
                self._auth[base] = f"Bearer {self.creds.registry_token}"
            elif challenge.scheme == "basic":
                if not self.creds.username:
                    raise Unauthenticated(f"registry {self.ref.domain} requires credentials for {self.ref}")
                self._auth[base] = basic_header(self.creds)
            elif challenge.scheme == "bearer":
                self._auth[base] = f"Bearer {await self._token(challenge.params)}"
            else:
                raise Unauthenticated(f"registry {self.ref.domain}: unsupported auth {challenge.scheme}")
        raise AssertionError("unreachable")

    async def _get(self, path: str, accept: str, stream: bool = False) -> httpx.Response:
        """Try each mirror, then the registry; the first that has the object answers."""
        errors = []
        for base in self.urls:
            try:
                resp = await self._send(base, path, accept, stream)
            except httpx.HTTPError as e:
                errors.append(f"{base}: {type(e).__name__}: {e}")
                continue
            if resp.status_code == 200:
                return resp
            if resp.status_code == 401:
                await resp.aclose()
                raise Unauthenticated(f"registry {self.ref.domain}: credentials rejected for {self.ref}")
            errors.append(f"{base}: HTTP {resp.status_code}")
            await resp.aclose()
            if resp.status_code == 404 and base == self.urls[-1]:
                raise NotFound(f"image {self.ref} not found: {'; '.join(errors)}")
        if all("HTTP 404" in e for e in errors):
            raise NotFound(f"image {self.ref} not found: {'; '.join(errors)}")
        raise Unavailable(f"cannot pull {self.ref}: {'; '.join(errors)}")

    async def manifest(self, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest by tag or digest; digests are verified."""
        resp = await self._get(f"manifests/{reference}", MANIFEST_TYPES)
        body = resp.content
        if len(body) > MAX_MANIFEST:
            raise InvalidArgument(f"manifest for {self.ref} is larger than {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise FailedPrecondition(f"manifest {reference} of {self.ref} has digest {digest}")
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        return media, body, digest

    async def blob_to(self, digest: str, dest: Path, progress: Callable[[int], None]) -> int:
        """Stream a blob into dest, verifying its digest while it arrives."""
        h = hashlib.sha256()
        with open(dest, "wb") as f:
            async def feed(chunk: bytes) -> None:
                h.update(chunk)
                f.write(chunk)
            # Not fsynced here: the content store's commit does that before the rename.
            size = await self.blob_into(digest, feed, progress)
        got = "sha256:" + h.hexdigest()
        if got != digest:
            raise self.digest_mismatch(digest, got)
        return size

    async def blob_into(self, digest: str, feed: Callable[[bytes], Awaitable[None]],
                        progress: Callable[[int], None]) -> int:
        """Stream a blob into feed as it arrives (the consumer verifies the digest)."""
        resp = await self._get(f"blobs/{digest}", "*/*", stream=True)
        size = 0
        try:
            # Chunks as the connection delivers them: re-chunking would copy every byte.
            async for chunk in resp.aiter_bytes():
                await feed(chunk)
                size += len(chunk)
                progress(len(chunk))
        except httpx.HTTPError as e:
            raise Unavailable(f"downloading {digest} of {self.ref}: {e}") from None
        finally:
            await resp.aclose()
        return size

    def digest_mismatch(self, digest: str, got: str) -> FailedPrecondition:
        return FailedPrecondition(f"blob {digest} of {self.ref} has content with digest {got}")
