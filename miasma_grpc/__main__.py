"""``python -m miasma_grpc`` / ``miasma-server``: start the server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from miasma_grpc.config import load_settings
from miasma_grpc.server import main_async


def main(argv: Sequence[str] | None = None) -> None:
    """Parse settings, configure logging, serve until a signal arrives."""
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(main_async(settings))


if __name__ == "__main__":
    main()
