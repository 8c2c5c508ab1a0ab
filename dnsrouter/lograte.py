"""Log lines that a flood could repeat, capped per second.

A server on the open internet meets the same fault at line rate (garbage
packets, a database region that fails every lookup); one line per event
would drown the log and cost more than the answer. `RateLimitedLog`
writes at most `rate` lines a second and then one line saying how many
it left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class RateLimitedLog:
    """At most `rate` warnings a second on `logger`; the rest are counted
    and reported as `<event> suppressed=N` when the next second starts."""

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        rate: int,
        clock: Callable[[], float],
    ) -> None:
        self.logger = logger
        self.event = event
        self.rate = rate
        self.clock = clock
        self.window = -1.0
        self.count = 0
        self.suppressed = 0

    def warn(self, fields: str, *args: object) -> None:
        """Log `<event> <fields % args>` unless this second's quota is used."""
        now = self.clock()
        if now - self.window >= 1.0:
            if self.suppressed:
                self.logger.warning(
                    "%s suppressed=%d", self.event, self.suppressed
                )
            self.window, self.count, self.suppressed = now, 0, 0
        if self.count < self.rate:
            self.count += 1
            self.logger.warning(self.event + " " + fields, *args)
        else:
            self.suppressed += 1
