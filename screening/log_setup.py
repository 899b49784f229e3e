"""Process-wide logging to stderr, for the ``mamoru`` commands and the web page's own process."""

from __future__ import annotations

import logging
import sys

from screening.core.safe_text import TerminalSafeFormatter


def setup_logging(level: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])
