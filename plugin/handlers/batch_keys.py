"""Which orders and shoppers a parsed delivery's handler will lock, known before any handler runs, so a
batch can take all its locks first in ascending order (`store.batch_locks`)."""

from __future__ import annotations

from typing import Any

from plugin.shopify.payloads import (
    CheckoutData,
    ConsentUpdate,
    CustomerDeleted,
    CustomerRef,
    FulfillmentData,
    OrderData,
    PurchasingSummary,
    RefundData,
)


def lock_keys(payload: Any) -> tuple[list[int], list[int]]:
    """(order ids, customer ids) the payload's handler locks; a shopper reached through a stored order
    (refunds, fulfillments) is found by `batch_locks` once the order is locked. Tag changes and carts are
    left to their handlers (a tag change of our own tags must create no shopper row)."""
    if isinstance(payload, OrderData):
        return [payload.id], [payload.customer.id] if payload.customer else []
    if isinstance(payload, RefundData | FulfillmentData):
        return [payload.order_id], []
    if isinstance(payload, CustomerRef | CustomerDeleted):
        return [], [payload.id]
    if isinstance(payload, ConsentUpdate | PurchasingSummary):
        return [], [payload.customer_id]
    if isinstance(payload, CheckoutData):
        return [], [payload.customer.id] if payload.customer else []
    return [], []
