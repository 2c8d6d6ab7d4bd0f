"""`alliance bench --profile`: where each node writes its cProfile statistics, and their summary on stderr."""

from __future__ import annotations

import os
import pstats
import sys
from pathlib import Path

from node.bench.progress import progress
from node.errors import AllianceError

_SOURCE_ROOT = str(Path(__file__).resolve().parents[2]) + os.sep


def profile_paths(directory_arg: str | None, nodes: int) -> list[Path] | None:
    """DIR/node<i>.pstats for each node (DIR created, stale files removed); None without --profile."""
    if directory_arg is None:
        return None
    directory = Path(directory_arg).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AllianceError(f"--profile {directory_arg}: {exc.strerror}") from None
    paths = [directory / f"node{i}.pstats" for i in range(nodes)]
    for path in paths:
        path.unlink(missing_ok=True)  # so that a stale profile is never taken for this run's
    return paths


def summarise_profiles(paths: list[Path], sort: str, top: int) -> None:
    for i, path in enumerate(paths):
        if not path.exists():
            progress(f"node{i} wrote no profile to {path}")
            continue
        stats = pstats.Stats(str(path))
        rows = sorted(stats.stats.items(),  # type: ignore[attr-defined]
                      key=lambda item: item[1][2 if sort == "tottime" else 3], reverse=True)[:top]
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"\nnode{i} profile: {path} ({total:.1f} s in the event-loop thread; top {top} by {sort})",
              file=sys.stderr)
        print(f"{'tottime':>9} {'cumtime':>9} {'calls':>10}  function", file=sys.stderr)
        for (filename, line, function), (_, calls, tottime, cumtime, _) in rows:
            print(f"{tottime:9.2f} {cumtime:9.2f} {calls:10d}  {_short(filename)}:{line}({function})",
                  file=sys.stderr)
    print(file=sys.stderr)


def _short(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    return filename[len(_SOURCE_ROOT):] if filename.startswith(_SOURCE_ROOT) else filename
