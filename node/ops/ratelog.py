"""A repeated event logged at most once per interval, with how often it happened, not once per occurrence."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

INTERVAL_S = 60.0


class RateLog:
    """Logs "EVENT count=N": the first occurrence at once, then at most once per interval per event,
    N counting every occurrence since the last line (the ones in between are only counted)."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.interval_s = interval_s
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def log(self, event: str, exc: BaseException | None = None) -> None:
        """Counts `event` (a logfmt text from a small fixed set: it is the key) and maybe logs it; `exc`'s
        traceback goes with the event's first line only."""
        self._counts[event] = self._counts.get(event, 0) + 1
        now = self.clock()
        last = self._logged_at.get(event)
        if last is None or now - last >= self.interval_s:
            self._logged_at[event] = now
            # The event is the template, so that the log formatter reads its key=value fields.
            self.logger.log(self.level, event.replace("%", "%%") + " count=%d", self._counts.pop(event),
                            exc_info=exc if last is None else None)
