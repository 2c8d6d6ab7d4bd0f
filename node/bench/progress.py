"""`alliance bench`'s progress lines: on stderr, since stdout holds only the JSON report."""

from __future__ import annotations

import sys


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
