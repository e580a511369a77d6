"""Generate the client stubs from ``protos/``: Python and, if asked, Node (TypeScript).

``python scripts/gen_protos.py OUT`` writes the Python stubs (``*_pb2.py``,
``*_pb2_grpc.py`` and typed ``.pyi``) under ``OUT/miasma/v1``;
``--node DIR`` also writes the TypeScript stubs (ts-proto, for
``@grpc/grpc-js``) under ``DIR``, with the ``google.rpc`` error details the
Node client decodes. ``--check`` regenerates into a temporary folder and
fails if anything differs, so CI catches stubs that drift from ``protos/``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("miasma") / "v1"
KEEP = {"__init__.py"}

NODE = ROOT / "clients" / "node"
# google/rpc/{status,error_details}.proto, copied from googleapis so the
# Node stubs do not depend on whichever googleapis-common-protos is installed.
NODE_PROTOS = NODE / "protos"
NODE_PLUGIN = NODE / "node_modules" / ".bin" / "protoc-gen-ts_proto"
NODE_OPTIONS = ",".join(
    [
        "outputServices=grpc-js",
        "env=node",
        "esModuleInterop=true",
        "useExactTypes=false",
        "forceLong=number",
    ]
)


def _include() -> str:
    """protoc's own well-known types (google/protobuf/*.proto), bundled with grpcio-tools."""
    return str(resources.files("grpc_tools") / "_proto")


def _sources(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))


def _protoc(args: list[str]) -> None:
    if protoc.main(["protoc", *args]) != 0:
        raise SystemExit("protoc failed")


def generate(out: Path) -> list[Path]:
    """Run protoc with the Python, gRPC and mypy plugins into ``out``."""
    bindir = Path(sys.executable).parent
    _protoc(
        [
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"-I{PROTOS}",
            f"-I{_include()}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *_sources(PROTOS),
        ]
    )
    return sorted((out / PACKAGE).iterdir())


def generate_node(out: Path) -> list[Path]:
    """Run protoc with ts-proto (from ``clients/node/node_modules``) into ``out``."""
    if not NODE_PLUGIN.exists():
        raise SystemExit(f"{NODE_PLUGIN} is missing: run `npm ci` in {NODE} (make does)")
    _protoc(
        [
            f"--plugin=protoc-gen-ts_proto={NODE_PLUGIN}",
            f"-I{PROTOS}",
            f"-I{NODE_PROTOS}",
            f"-I{_include()}",
            f"--ts_proto_out={out}",
            f"--ts_proto_opt={NODE_OPTIONS}",
            *_sources(PROTOS),
            *_sources(NODE_PROTOS),
        ]
    )
    return sorted(p for p in out.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Output:
    """Freshly generated files (``fresh``, relative to ``source``) bound for ``target``."""

    source: Path
    fresh: list[Path]
    target: Path
    existing: set[str]

    def names(self) -> set[str]:
        """Relative paths of the generated files."""
        return {str(p.relative_to(self.source)) for p in self.fresh}

    def drift(self) -> list[str]:
        """Files missing, extra or different in ``target``."""
        names = self.names()
        return sorted(self.existing ^ names) + [
            name
            for name in sorted(names & self.existing)
            if not filecmp.cmp(self.source / name, self.target / name, shallow=False)
        ]

    def write(self) -> None:
        """Make ``target`` hold exactly the generated files (plus what is kept)."""
        self.target.mkdir(parents=True, exist_ok=True)
        for stale in self.existing - self.names():
            (self.target / stale).unlink()
        for name in sorted(self.names()):
            (self.target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.source / name, self.target / name)


def _files(folder: Path, pattern: str) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.glob(pattern) if p.is_file()}


def check(outputs: Iterable[Output]) -> int:
    """Report drift; 1 if any generated file differs from the committed one."""
    drift = [str(o.target / name) for o in outputs for name in o.drift()]
    if drift:
        print(f"generated stubs drifted from protos/: {', '.join(drift)}; run `make protos`")
        return 1
    for output in outputs:
        print(f"generated stubs match protos/ ({len(output.fresh)} files in {output.target})")
    return 0


def write(outputs: Iterable[Output]) -> int:
    """Write every output."""
    for output in outputs:
        output.write()
        print(f"wrote {len(output.fresh)} files to {output.target}")
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder that holds the miasma/ package")
    parser.add_argument("--node", type=Path, help="folder for the TypeScript stubs")
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        python_tmp = Path(tmp) / "python"
        python_tmp.mkdir()
        target = ns.out / PACKAGE
        outputs = [
            Output(python_tmp / PACKAGE, generate(python_tmp), target, _files(target, "*") - KEEP)
        ]
        if ns.node is not None:
            node_tmp = Path(tmp) / "node"
            node_tmp.mkdir()
            outputs.append(
                Output(node_tmp, generate_node(node_tmp), ns.node, _files(ns.node, "**/*"))
            )
        return check(outputs) if ns.check else write(outputs)


if __name__ == "__main__":
    sys.exit(main())
