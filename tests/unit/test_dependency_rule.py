"""The dependency rule of ARCHITECTURE.md, checked by walking every module's imports (ast).

cri_shim -> oci, never the reverse; pyrunc is a program of its own; and inside cri_shim only the
modules whose job it is touch oci. Imports inside functions count as much as top-level ones.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which cri_shim modules may import which oci modules: the rule as the code stands.
OCI_USERS: dict[str, set[str]] = {
    # The one atomic writer lives at the bottom of oci so both layers share it.
    "cri_shim.atomic_file": {"oci.atomic_file"},
    # Container side: CRI config -> OCI spec (model and builder), and runtime errors; it never
    # drives a runtime itself (no oci.runtime, oci.cli_runtime).
    "cri_shim.containers": {"oci.spec", "oci.builder", "oci.errors"},
    # What a CRI runtime handler runs containers with: the only place that drives a runtime.
    "cri_shim.runtimes": {"oci.spec", "oci.runtime", "oci.cli_runtime", "oci.errors", "oci.blocking"},
    "cri_shim.runtime_handlers": {"oci.errors"},
    # Each error tied to its gRPC code: the oci layer's errors too, by class (SpecError from oci.spec).
    "cri_shim.errors": {"oci.errors", "oci.spec"},
}
# Not listed, so they may import no oci module at all: cri_shim.stats (container and pod stats
# and metrics, read from cgroupfs and /proc), cri_shim.ports (what containers need from pods and
# images) and cri_shim.id_lookup (the id index both managers keep), like server/ and sandboxes/.
# What pyrunc may import from oci outside its own package: the stdlib-only writer, nothing else.
# It never sees the spec model (oci.spec, oci.builder, oci._model): it reads config.json as
# plain dicts, because it starts afresh for every runtime command and typing costs milliseconds.
PYRUNC_MAY_USE = {"oci.atomic_file"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every module path imports, absolute; `from a import b` yields a.b as well as a."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def under(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def known_oci_module(mod: str) -> str | None:
    """mod itself or the oci module it names a member of (oci.spec.Spec -> oci.spec)."""
    while mod and under(mod, "oci"):
        path = ROOT / Path(*mod.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return mod
        mod = mod.rpartition(".")[0]
    return None


def test_the_walk_sees_imports() -> None:
    assert "oci.atomic_file" in set(imports(ROOT / "cri_shim" / "atomic_file.py"))
    assert "oci.atomic_file" in set(imports(ROOT / "oci" / "pyrunc" / "state.py"))  # relative
    assert len(modules("cri_shim")) > 50 and len(modules("oci/pyrunc")) > 15


@pytest.mark.parametrize("path", modules("oci"), ids=lambda p: module_name(p))
def test_oci_knows_nothing_of_cri_shim(path: Path) -> None:
    assert [m for m in imports(path) if under(m, "cri_shim")] == []


@pytest.mark.parametrize("path", modules("oci/pyrunc"), ids=lambda p: module_name(p))
def test_pyrunc_stands_alone(path: Path) -> None:
    outside = {known_oci_module(m) for m in imports(path) if under(m, "oci") and not under(m, "oci.pyrunc")}
    assert outside <= PYRUNC_MAY_USE, f"{module_name(path)} imports {sorted(outside - PYRUNC_MAY_USE)}"


def test_the_writer_is_a_leaf() -> None:
    found = imports(ROOT / "oci" / "atomic_file.py")
    assert [m for m in found if under(m, "oci") or under(m, "cri_shim")] == []


@pytest.mark.parametrize("path", modules("cri_shim"), ids=lambda p: module_name(p))
def test_only_the_modules_meant_to_touch_oci_do(path: Path) -> None:
    name = module_name(path)
    used = {known_oci_module(m) for m in imports(path) if under(m, "oci")} - {"oci", None}
    allowed = set().union(*(mods for owner, mods in OCI_USERS.items() if under(name, owner)))
    assert used <= allowed, f"{name} imports {sorted(used - allowed)}; see OCI_USERS and ARCHITECTURE.md"
