"""POST /webhooks: raw body → verify → record and enqueue (`ledger_writer`) → 200. Nothing is
acknowledged before it is stored and queued; when the database or Redis is unreachable the answer is 503
and Shopify retries.

The body is never parsed here: the HMAC covers the raw bytes, and a signed body that does not even start
like a JSON object is refused by its first byte. Parsing (and every check of the content) is the worker's.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from plugin.shopify.verify import WebhookHeaderError, WebhookVerificationError
from plugin.web.ledger_writer import LedgerUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks")
def receive():
    """Accept one Shopify webhook delivery: verify, record, queue, acknowledge."""
    body = request.get_data(cache=False)  # raw bytes: the HMAC covers these, not re-serialised JSON
    try:
        headers = current_app.extensions["lifecycle.verifier"].verify(body, request.headers)
    except WebhookVerificationError as error:
        log.warning("rejected unsigned webhook: %s", error)
        return {"error": "invalid or missing HMAC signature"}, 401
    except WebhookHeaderError as error:
        log.warning("rejected signed webhook: %s", error)
        return {"error": str(error)}, 400
    if body.lstrip(b" \t\r\n")[:1] != b"{":
        # Shopify sends JSON objects only; checking the first byte costs no parsing. Nothing is stored.
        return {"error": "the body is not a JSON object"}, 400

    current_app.extensions["lifecycle.ledger"].record(headers, body)  # stored and queued, or raises
    return "", 200


@bp.errorhandler(LedgerUnavailable)
def ledger_unavailable(error: LedgerUnavailable):
    if error.database:
        log.error("webhook not recorded, database error: %s", error)
        return {"error": "database unavailable; retry later"}, 503
    # The delivery row is stored as `received`: Shopify's retry (or the tick) queues it again.
    log.error("webhook recorded but not queued, Redis error: %s", error)
    return {"error": "queue unavailable; retry later"}, 503


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error):
    return {"error": f"body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}, 413
