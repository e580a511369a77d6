"""docs/errors.md lists every ``google.rpc.ErrorInfo`` reason the code can send, and no other.

The reasons are read from the source: every ``reason="X"`` / ``reason = "X"`` string literal
in the server (``miasma_grpc``) and the Python client (``miasma_client``), generated
``*_pb2*.py`` files left out, plus the few reasons that reach ``reason=`` through a variable.
They must equal the first column of the table in docs/errors.md; the client's own reasons
are documented in their own section, outside the table.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "errors.md"
SOURCES = (ROOT / "miasma_grpc", ROOT / "clients" / "python" / "src" / "miasma_client")

LITERAL = re.compile(r'reason\s*=\s*"([A-Z][A-Z0-9_]*)"')
ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", re.MULTILINE)

# Reasons given to ``reason=`` through a variable, so LITERAL cannot see them.
# miasma_grpc/runtime/swarm.py, _task_failure:
#   reason = "PORT_CONFLICT_ON_NODE" if ... else "TASK_FAILED"
VIA_VARIABLES = frozenset({"TASK_FAILED"})

# Set by the Python client itself (miasma_client._errors.InvalidInput), never sent by the
# server: documented in the "Client-side reason" section, not in the table.
CLIENT_ONLY = frozenset({"INVALID_INPUT"})


def _source_text() -> str:
    files = sorted(
        path
        for root in SOURCES
        for path in root.rglob("*.py")
        if "_pb2" not in path.name  # generated: *_pb2.py, *_pb2_grpc.py, *_pb2.pyi
    )
    assert files, f"no source files under {[str(root) for root in SOURCES]}"
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def _table_rows() -> list[str]:
    return ROW.findall(DOCS.read_text(encoding="utf-8"))


def test_docs_table_lists_exactly_the_reasons_in_the_code() -> None:
    """The table's reasons are the code's reasons (client-only ones aside), both ways."""
    source = _source_text()
    unquoted = sorted(r for r in VIA_VARIABLES | CLIENT_ONLY if f'"{r}"' not in source)
    assert not unquoted, (
        f"no longer string literals in the source (update the sets in this test): {unquoted}"
    )

    in_code = (set(LITERAL.findall(source)) | VIA_VARIABLES) - CLIENT_ONLY
    documented = set(_table_rows())
    missing = sorted(in_code - documented)
    stale = sorted(documented - in_code)
    assert (missing, stale) == ([], []), (
        f"docs/errors.md is out of date.\n"
        f"  reasons in the code but not in the table: {missing or 'none'}\n"
        f"  reasons in the table but no longer in the code: {stale or 'none'}"
    )

    text = DOCS.read_text(encoding="utf-8")
    undocumented = sorted(r for r in CLIENT_ONLY if f"`{r}`" not in text)
    assert not undocumented, f"client-side reasons not in docs/errors.md: {undocumented}"


def test_docs_table_has_each_reason_once_in_order() -> None:
    """Each row is one reason, with no repeats, sorted alphabetically."""
    rows = _table_rows()
    repeated = sorted({r for r in rows if rows.count(r) > 1})
    assert not repeated, f"reasons listed more than once in docs/errors.md: {repeated}"
    assert rows == sorted(rows), "the rows of docs/errors.md are not in alphabetical order"
