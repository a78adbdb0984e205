"""`python -m plugin.scheduler` (Procfile "scheduler"): run the tick every LIFECYCLE_TICK_SECONDS."""

from __future__ import annotations

import logging
import os
import time

from plugin import create_app
from plugin.pipeline.tick import tick_app

log = logging.getLogger(__name__)


def run_forever(interval: float) -> None:
    app = create_app()
    while True:
        started = time.monotonic()
        report = tick_app(app)
        log.info("tick done: %s", report.as_dict())
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    run_forever(float(os.environ.get("LIFECYCLE_TICK_SECONDS", "300")))
