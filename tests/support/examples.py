"""How many examples a property test draws: the whole count in the full suite (the CI default),
a tenth (at least 25) in the fast lane (``scripts/test.sh --fast`` sets ``MAMORU_FAST_LANE=1``)."""

from __future__ import annotations

import os


def examples(full: int) -> int:
    if os.environ.get("MAMORU_FAST_LANE") == "1":
        return min(full, max(25, full // 10))
    return full
