"""Dependencies point inward (docs/design.md §2): checked by reading every module's imports."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "miasma_grpc"
CLIENT_SOURCES = ROOT / "clients" / "python" / "src"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute, including ``from pkg import sub`` as pkg.sub."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def python_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.py"))


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_stdlib(module: str) -> bool:
    return module.partition(".")[0] in sys.stdlib_module_names


def test_imports_resolve_relative_and_from_imports(tmp_path: Path) -> None:
    """The import reader sees relative imports and ``from pkg import module`` forms."""
    source = tmp_path / "pkg" / "sub" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text("import os\nfrom .. import server\nfrom .x import y\n")
    assert set(imports(source, tmp_path)) == {
        "os",
        "pkg",
        "pkg.server",
        "pkg.sub.x",
        "pkg.sub.x.y",
    }


@pytest.mark.parametrize("path", python_files(PACKAGE / "domain"), ids=lambda p: p.name)
def test_domain_imports_only_standard_library_and_domain(path: Path) -> None:
    """Domain modules are pure: they import the standard library and each other, nothing else."""
    foreign = [
        module
        for module in imports(path, ROOT)
        if not (is_stdlib(module) or within(module, "miasma_grpc.domain"))
        # `from miasma_grpc import domain` style names the parent package only as a path.
        and module != "miasma_grpc"
    ]
    assert foreign == []


@pytest.mark.parametrize("layer", ["api", "store", "runtime"])
def test_adapters_never_import_the_composition_root(layer: str) -> None:
    """api, store and runtime never import miasma_grpc.server (only it wires adapters)."""
    offenders = {
        str(path.relative_to(ROOT)): module
        for path in python_files(PACKAGE / layer)
        for module in imports(path, ROOT)
        if within(module, "miasma_grpc.server")
    }
    assert offenders == {}


def test_python_client_never_imports_server_code() -> None:
    """Nothing under clients/python/src imports miasma_grpc: clients ship stubs only."""
    paths = python_files(CLIENT_SOURCES)
    assert paths, "the client sources moved: update this test"
    offenders = {
        str(path.relative_to(ROOT)): module
        for path in paths
        for module in imports(path, CLIENT_SOURCES)
        if within(module, "miasma_grpc")
    }
    assert offenders == {}


def test_layers_under_check_exist() -> None:
    """The checked packages exist, so the tests above cannot pass vacuously."""
    for layer in ("domain", "api", "store", "runtime"):
        assert python_files(PACKAGE / layer), layer
