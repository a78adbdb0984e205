"""`python -m plugin.scheduler` (Procfile "scheduler"): run the tick every LIFECYCLE_TICK_SECONDS.

A tick that raises (the database or Redis away for a moment, a bug in one shop's data) is logged with its
traceback and the loop goes on: the next tick redoes whatever the failed one left, since every step of the
tick works from the rows as they are.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from plugin import create_app
from plugin.pipeline.tick import tick_app

log = logging.getLogger(__name__)


def run_forever(
    interval: float, app=None, ticks: int | None = None, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Tick every `interval` seconds (forever, or `ticks` times); returns how many ticks succeeded."""
    app = app or create_app()
    done = succeeded = 0
    while ticks is None or done < ticks:
        started = time.monotonic()
        try:
            report = tick_app(app)
        except Exception:  # noqa: BLE001 - one failed tick must not end the scheduler
            log.exception("tick failed; the next one runs in %.0f s", interval)
        else:
            succeeded += 1
            log.info("tick done: %s", report.as_dict())
        done += 1
        if ticks is None or done < ticks:
            sleep(max(0.0, interval - (time.monotonic() - started)))
    return succeeded


if __name__ == "__main__":
    run_forever(float(os.environ.get("LIFECYCLE_TICK_SECONDS", "300")))
