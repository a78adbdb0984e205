"""The `lifecycle` command: serve, worker, tick, shops, compliance, customers, predict, lift, backtest,
actions, deliveries, demo, db.

`main` (the click group) lives in `group`; each module below adds its commands to it when imported:
processes (serve, worker, tick, demo, db upgrade), shops, compliance, customers, insights (predict,
lift), backtest, ledger (actions, deliveries)."""

from __future__ import annotations

from plugin.cli import backtest, compliance, customers, insights, ledger, processes, shops  # noqa: F401
from plugin.cli.group import main

__all__ = ["main"]
