"""Loading images from an OCI image layout (directory or tar) or a `docker save` archive."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.errors import InvalidArgument
from cri_shim.imaging import reference
from cri_shim.imaging.manifests import INDEX_TYPES, select_platform

REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class ImportedImage:
    """One image found in an archive: blobs by digest (paths), its config and layer order."""

    names: list[str]
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    blobs: dict[str, Path]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{what}: {e}") from None


def _safe_extract(tar_path: Path, dest: Path) -> None:
    try:
        with tarfile.open(tar_path) as t:
            t.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise InvalidArgument(f"{tar_path} is not a readable tar archive: {e}") from None


def _qualify(name: str, default_repo: str) -> str | None:
    """An index ref.name (a full reference or a bare tag) as a normalized reference."""
    if not name:
        return None
    if ":" not in name and "/" not in name and default_repo:
        name = f"{default_repo}:{name}"
    try:
        return str(reference.parse(name))
    except InvalidArgument:
        return None


def read_oci_layout(root: Path, default_repo: str) -> list[ImportedImage]:
    if not (root / "oci-layout").exists():
        raise InvalidArgument(f"{root} is not an OCI image layout (no oci-layout file)")
    blobs_dir = root / "blobs" / "sha256"

    def blob(digest: str) -> Path:
        p = blobs_dir / digest.removeprefix("sha256:")
        if "/" in digest.removeprefix("sha256:") or not p.is_file():
            raise InvalidArgument(f"{root}: blob {digest} is missing")
        if _sha(p) != digest:
            raise InvalidArgument(f"{root}: blob {digest} does not match its digest")
        return p

    out = []
    index = _load_json(root / "index.json", f"{root}/index.json")
    for entry in index.get("manifests") or []:
        digest = entry["digest"]
        names = [n for n in [_qualify((entry.get("annotations") or {}).get(REF_NAME, ""), default_repo)] if n]
        path = blob(digest)
        doc = _load_json(path, f"manifest {digest}")
        if entry.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            digest = select_platform(doc, str(root))
            path = blob(digest)
            doc = _load_json(path, f"manifest {digest}")
        config = doc["config"]["digest"]
        layer_digests = [d["digest"] for d in doc.get("layers") or []]
        blobs = {d: blob(d) for d in [digest, config, *layer_digests]}
        out.append(ImportedImage(names, digest, config, layer_digests, blobs))
    if not out:
        raise InvalidArgument(f"{root}: index.json lists no images")
    return out


def read_docker_save(root: Path) -> list[ImportedImage]:
    out = []
    for entry in _load_json(root / "manifest.json", f"{root}/manifest.json"):
        config_path = (root / entry["Config"]).resolve()
        if not config_path.is_relative_to(root.resolve()):
            raise InvalidArgument(f"docker archive: config path {entry['Config']!r} escapes the archive")
        blobs = {}
        config = _sha(config_path)
        blobs[config] = config_path
        layer_digests = []
        for rel in entry.get("Layers") or []:
            p = (root / rel).resolve()
            if not p.is_relative_to(root.resolve()) or not p.is_file():
                raise InvalidArgument(f"docker archive: layer {rel!r} is missing or escapes the archive")
            d = _sha(p)
            blobs[d] = p
            layer_digests.append(d)
        names = [n for n in (_qualify(t, "") for t in entry.get("RepoTags") or []) if n]
        out.append(ImportedImage(names, "", config, layer_digests, blobs))
    return out


def read_archive(path: Path, default_repo: str = "") -> tuple[list[ImportedImage], Path | None]:
    """Images in path; when path is a tar, also the temp dir to remove afterwards."""
    tmp = None
    root = path
    if path.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="cri-shim-import-"))
        _safe_extract(path, tmp)
        root = tmp
    elif not path.is_dir():
        raise InvalidArgument(f"{path} does not exist")
    try:
        if (root / "oci-layout").exists():
            return read_oci_layout(root, default_repo), tmp
        if (root / "manifest.json").exists():
            return read_docker_save(root), tmp
        raise InvalidArgument(f"{path} is neither an OCI image layout nor a docker save archive")
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
