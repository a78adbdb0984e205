"""Our Shopify Admin GraphQL client: one per shop, pinned API version, cost-aware, errors as a small tree.

The documents live in `plugin/graphql/*.graphql` (the only GraphQL in the codebase), named by operation.
Cost awareness: each response's `extensions.cost.throttleStatus` says how full the shop's bucket is; before
a call whose last requested cost exceeds what is left, the client waits for the bucket to refill (up to
MAX_WAIT, beyond which it raises ShopifyThrottled for the job to come back later). THROTTLED, 429 and 5xx
are retried in-process with backoff a few times, then raised.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import requests

from plugin.config import API_VERSION

log = logging.getLogger(__name__)

DOCUMENTS = Path(__file__).parent / "graphql"
MAX_WAIT = 10.0  # seconds a call may wait for the bucket in-process
TRIES = 4


class ShopifyError(Exception):
    """Any failure of a call to the Admin API."""


class ShopifyThrottled(ShopifyError):
    """THROTTLED / 429 after the in-process retries: come back after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"throttled; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class ShopifyTransientError(ShopifyError):
    """5xx, timeouts, connection errors: retry later."""


class ShopifyAuthError(ShopifyError):
    """401/403: the token is revoked or lacks a scope; do not retry."""


class ShopifyUserErrors(ShopifyError):
    """The mutation ran and refused the input (userErrors), or the document was rejected: permanent."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(str(e.get("message")) for e in errors) or "user errors")
        self.errors = errors

    @property
    def codes(self) -> set[str]:
        return {e.get("code") for e in self.errors if e.get("code")}


@cache
def document(operation: str) -> str:
    """The text of plugin/graphql/<operation>.graphql."""
    return (DOCUMENTS / f"{operation}.graphql").read_text()


def operations() -> list[str]:
    return sorted(p.stem for p in DOCUMENTS.glob("*.graphql"))


EACH = "#each"  # a document line ending so is repeated per item, its `_0` suffixes renumbered


@cache
def aliased_document(operation: str, count: int) -> str:
    """The document for `count` items: each line marked `#each` repeated with `_0` → `_1`, `_2`...

    The stored document (one item) is itself valid, so the schema check of every document covers it;
    the copies differ only in alias and variable names.
    """
    lines = []
    for line in document(operation).splitlines():
        if line.rstrip().endswith(EACH):
            body = line.rstrip().removesuffix(EACH).rstrip()
            lines += [re.sub(r"_0\b", f"_{i}", body) for i in range(count)]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Bucket:
    """The shop's cost bucket as the last response described it."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    read_at: float = 0.0

    def estimate(self, now: float) -> float:
        return min(self.maximum, self.available + (now - self.read_at) * self.restore_rate)


class ShopifyClient:
    """Admin GraphQL for one shop. `origin` overrides https://{shop} (the fake store in tests and demo)."""

    def __init__(
        self,
        shop_domain: str,
        access_token: str,
        api_version: str = API_VERSION,
        origin: str | None = None,
        session: requests.Session | None = None,
        sleep=time.sleep,
    ):
        self.shop_domain = shop_domain
        self.url = f"{(origin or f'https://{shop_domain}').rstrip('/')}/admin/api/{api_version}/graphql.json"
        self.headers = {"X-Shopify-Access-Token": access_token, "Content-Type": "application/json"}
        self.http = session or requests.Session()
        self.bucket = Bucket()
        self.costs: dict[str, float] = {}  # operation -> last requested cost
        self.sleep = sleep

    def execute(
        self,
        operation: str,
        variables: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        user_errors: bool = True,
    ) -> dict:
        """Run a named operation; return its `data`, raising one class of the error tree otherwise.

        `text` replaces the stored document (an aliased one, `aliased_document`); `user_errors=False`
        returns mutations' userErrors in the data instead of raising, for documents of many mutations
        whose caller settles each one by its alias.
        """
        payload = {
            "query": text or document(operation),
            "operationName": operation,
            "variables": variables or {},
        }
        for attempt in range(TRIES):
            self._wait_for_bucket(operation)
            try:
                response = self.http.post(self.url, json=payload, headers=self.headers, timeout=30)
            except requests.RequestException as error:
                error_class, delay = ShopifyTransientError(f"{type(error).__name__}: {error}"), 2.0**attempt
            else:
                outcome = self._read(operation, response, user_errors)
                if isinstance(outcome, dict):
                    return outcome
                error_class, delay = outcome
            if attempt + 1 < TRIES and delay <= MAX_WAIT:
                log.info("%s on %s: %s; retrying in %.1f s", operation, self.shop_domain, error_class, delay)
                self.sleep(delay)
                continue
            raise error_class
        raise AssertionError("unreachable")

    def _wait_for_bucket(self, operation: str) -> None:
        needed = self.costs.get(operation, 10.0)
        missing = needed - self.bucket.estimate(time.monotonic())
        if missing <= 0:
            return
        wait = missing / max(self.bucket.restore_rate, 1.0)
        if wait > MAX_WAIT:
            raise ShopifyThrottled(wait)
        self.sleep(wait)

    def _read(self, operation: str, response: requests.Response, user_errors: bool = True):
        """The data, or (error to raise, seconds to wait before a retry)."""
        if response.status_code in (401, 403):
            raise ShopifyAuthError(f"{response.status_code} from {self.shop_domain}")
        if response.status_code == 429:
            retry_after = float(response.headers.get("Retry-After", 1.0))
            return ShopifyThrottled(retry_after), retry_after
        if response.status_code >= 500:
            return ShopifyTransientError(f"{response.status_code} from {self.shop_domain}"), 1.0
        try:
            body = response.json()
        except ValueError:
            return ShopifyTransientError(f"non-JSON answer ({response.status_code})"), 1.0
        retry_after = self._note_cost(operation, body.get("extensions") or {})
        errors = body.get("errors") or []
        if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
            return ShopifyThrottled(retry_after), retry_after
        if errors:
            raise ShopifyUserErrors(errors)
        data = body.get("data") or {}
        for result in data.values() if user_errors else ():
            if isinstance(result, dict) and result.get("userErrors"):
                raise ShopifyUserErrors(result["userErrors"])
        return data

    def _note_cost(self, operation: str, extensions: dict) -> float:
        """Remember the bucket and this operation's cost; return the wait until it would fit again."""
        cost = extensions.get("cost") or {}
        status = cost.get("throttleStatus") or {}
        if status:
            self.bucket = Bucket(
                float(status["maximumAvailable"]),
                float(status["currentlyAvailable"]),
                float(status["restoreRate"]),
                time.monotonic(),
            )
        requested = float(cost.get("requestedQueryCost") or self.costs.get(operation, 10.0))
        self.costs[operation] = requested
        return max(requested - self.bucket.available, 0.0) / max(self.bucket.restore_rate, 1.0) + 0.05
