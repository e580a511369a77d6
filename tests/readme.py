"""The README's tested blocks: a block marked ``<!-- tested: tests/e2e/FILE.py::TEST -->``
is run by that test, so the README cannot drift from what works."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(test: str) -> list[str]:
    """The lines of the README's bash block marked as tested by ``test`` (a
    ``tests/e2e/FILE.py::NAME`` id), stripped, without blank and comment-only lines;
    a line's trailing comment (what it prints) stays."""
    text = README.read_text(encoding="utf-8")
    block = re.search(rf"<!-- tested: {re.escape(test)} -->\n\s*```bash\n(.*?)```", text, re.S)
    assert block is not None, f"no README block tested by {test}"
    lines = [line.strip() for line in block[1].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
