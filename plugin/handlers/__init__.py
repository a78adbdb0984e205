"""Webhook handlers, one module per topic family; importing this package registers them all."""

from __future__ import annotations

from plugin.handlers import checkouts, compliance, customers, installation, inventory, orders
from plugin.handlers.registry import HANDLERS, NoHandlerError, dispatch

__all__ = [
    "HANDLERS",
    "NoHandlerError",
    "dispatch",
    "checkouts",
    "compliance",
    "customers",
    "installation",
    "inventory",
    "orders",
]
