"""Generate the Python stubs (``*_pb2.py``, ``*_pb2_grpc.py`` and typed ``.pyi``).

``python scripts/gen_protos.py OUT`` writes them under ``OUT/miasma/v1``;
``--check`` regenerates into a temporary folder and fails if anything
differs, so CI catches stubs that drift from ``protos/``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("miasma") / "v1"
KEEP = {"__init__.py"}


def generate(out: Path) -> list[Path]:
    """Run protoc with the Python, gRPC and mypy plugins into ``out``."""
    include = resources.files("grpc_tools") / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / PACKAGE).iterdir())


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder that holds the miasma/ package")
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    ns = parser.parse_args()
    target = ns.out / PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        names = {p.name for p in generated}
        existing = {p.name for p in target.glob("*") if p.is_file()} - KEEP
        if ns.check:
            drift = sorted(existing ^ names) + [
                p.name
                for p in generated
                if p.name in existing and not filecmp.cmp(p, target / p.name, shallow=False)
            ]
            if drift:
                print(
                    f"generated stubs drifted from protos/: {', '.join(drift)}; run `make protos`"
                )
                return 1
            print(f"generated stubs match protos/ ({len(names)} files)")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for stale in existing - names:
            (target / stale).unlink()
        for path in generated:
            shutil.copyfile(path, target / path.name)
        print(f"wrote {len(names)} files to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
