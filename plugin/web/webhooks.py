"""POST /webhooks: raw body → verify → record and enqueue (`ledger_writer`) → 200. Nothing is
acknowledged before it is stored and queued; when the database or Redis is unreachable the answer is 503
and Shopify retries.

The body is never parsed here: the HMAC covers the raw bytes, and a signed body that does not even start
like a JSON object is refused by its first byte. Parsing (and every check of the content) is the worker's.

The endpoint is served below Flask: `WebhookReceiver` wraps the app's WSGI callable, answers requests
for /webhooks itself and hands every other request to Flask. A webhook needs none of what Flask does for
a request (a request context, the session cookie, URL routing, request and response objects): that is
about 0.16 ms of CPU a request, a third of what the whole server spends on a bare Flask endpoint, and
Shopify sends far more webhooks than every other request together. The receiver reads the headers from
the WSGI environ (Werkzeug's `EnvironHeaders`, no copy) and the body through Werkzeug's size-capped
stream, and answers errors as JSON, as the rest of the app does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from plugin.shopify.verify import WebhookHeaderError, WebhookVerificationError
from plugin.web.ledger_writer import LedgerUnavailable

log = logging.getLogger(__name__)

PATH = "/webhooks"


class WebhookReceiver:
    """The app's WSGI callable: POST /webhooks answered here, everything else by Flask (`flask_wsgi`)."""

    def __init__(self, flask_wsgi: Callable, config: dict, extensions: dict):
        self.flask_wsgi = flask_wsgi
        self.config = config  # the app's: MAX_CONTENT_LENGTH
        self.extensions = extensions  # the app's: verifier and ledger; both read at each request

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.flask_wsgi(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            status, answer = 405, {"error": "POST only"}
        else:
            status, answer = self.receive(environ)
        payload = b"" if answer is None else json.dumps(answer).encode()
        headers = [("Content-Length", str(len(payload)))]
        if answer is not None:
            headers.append(("Content-Type", "application/json"))
        if status == 405:
            headers.append(("Allow", "POST"))
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", headers)  # as Werkzeug writes it
        return [payload]

    def receive(self, environ: dict) -> tuple[int, dict | None]:
        """Accept one Shopify webhook delivery: verify, record, queue; the status and JSON to answer."""
        cap = self.config["MAX_CONTENT_LENGTH"]
        try:  # raw bytes: the HMAC covers these, not re-serialised JSON
            # A chunked body has no length to refuse up front: the stream stops at the cap, so one byte
            # more is asked for, and getting it means the body is over the cap.
            body = get_input_stream(environ, max_content_length=cap + 1).read()
        except RequestEntityTooLarge:
            body = None
        except ClientDisconnected:
            return 400, {"error": "the body ended before its Content-Length"}
        if body is None or len(body) > cap:
            return 413, {"error": f"body larger than {cap} bytes"}
        try:
            headers = self.extensions["lifecycle.verifier"].verify(body, EnvironHeaders(environ))
        except WebhookVerificationError as error:
            log.warning("rejected unsigned webhook: %s", error)
            return 401, {"error": "invalid or missing HMAC signature"}
        except WebhookHeaderError as error:
            log.warning("rejected signed webhook: %s", error)
            return 400, {"error": str(error)}
        if body.lstrip(b" \t\r\n")[:1] != b"{":
            # Shopify sends JSON objects only; checking the first byte costs no parsing. Nothing is stored.
            return 400, {"error": "the body is not a JSON object"}

        try:
            self.extensions["lifecycle.ledger"].record(headers, body)  # stored and queued, or raises
        except LedgerUnavailable as error:
            if error.database:
                log.error("webhook not recorded, database error: %s", error)
                return 503, {"error": "database unavailable; retry later"}
            # The delivery row is stored as `received`: Shopify's retry (or the tick) queues it again.
            log.error("webhook recorded but not queued, Redis error: %s", error)
            return 503, {"error": "queue unavailable; retry later"}
        return 200, None
