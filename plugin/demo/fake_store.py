"""A local stand-in for a shop's Admin GraphQL API (as stripe-mock is for Stripe): used by the tests and by
`lifecycle demo`, reached through SHOPIFY_ADMIN_ORIGIN.

It answers what Lifecycle sends the way Shopify does: every document is validated against Shopify's
published Admin schema for the pinned version (an invalid one gets GraphQL errors, and is counted), the
answer carries exactly the fields the document selected, mutations report `userErrors`, and every answer
carries `extensions.cost` from a leaky bucket that throttles (`THROTTLED`) when it runs dry.

`GET /_fake/state` shows the store (customers' tags, metafields and consent; discount codes; calls), so a
demo's effects are visible; `POST /_fake/control` sets failures and the bucket for tests.

`calls` holds one entry per request, however many (aliased) mutations its document runs. The bucket keeps
store time: `time_scale` runs it that many times faster (a test of a 30-minute burst takes seconds), and
the restore rate it reports is the one a client sees in real seconds (restore_rate × time_scale).
"""

from __future__ import annotations

import gzip
import itertools
import json
import threading
import time
from functools import cache
from typing import Any

import graphql
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from plugin.config import API_VERSION
from plugin.demo.fake_bulk import FakeBulk
from plugin.demo.fake_oauth import FakeOAuth
from plugin.shopify.client import DOCUMENTS

SCHEMA_FILE = DOCUMENTS / f"admin_{API_VERSION}.json.gz"
MUTATION_COST, QUERY_COST = 10, 1


@cache
def admin_schema() -> graphql.GraphQLSchema:
    """Shopify's Admin schema for the pinned version (introspection JSON shipped with the package)."""
    with gzip.open(SCHEMA_FILE) as handle:
        return graphql.build_client_schema(json.load(handle)["data"])


def validate_document(text: str) -> list[str]:
    """Messages of every way `text` breaks the Admin schema (empty when it is valid)."""
    try:
        return [e.message for e in graphql.validate(admin_schema(), graphql.parse(text))]
    except graphql.GraphQLError as error:
        return [error.message]


class FakeStore(FakeOAuth, FakeBulk):
    """One fake shop's state and its WSGI app."""

    def __init__(
        self,
        access_token: str | None = None,
        maximum: float = 1000.0,
        restore_rate: float = 50.0,
        *,
        shop_domain: str = "fake-store.myshopify.com",
        api_key: str | None = None,
        api_secret: str | None = None,
        scopes: str = "read_customers,write_customers,read_orders,write_discounts",
        shop_email: str = "merchant@example.com",
        contact_email: str = "support@example.com",
        development: bool = False,
        time_scale: float = 1.0,
    ):
        self.access_token = access_token  # None: any non-empty token is accepted (else it or issued ones)
        self.shop_domain = shop_domain
        self.shop = {
            "email": shop_email,
            "contactEmail": contact_email,
            "plan": {"partnerDevelopment": development},
        }
        self._init_oauth(api_key, api_secret, scopes)
        self._init_bulk()
        self.origin = "http://127.0.0.1"  # set by FakeStoreServer to where it listens
        self.lock = threading.Lock()
        self.customers: dict[str, dict] = {}
        self.discounts: dict[str, dict] = {}
        self.calls: list[dict] = []
        self.invalid_documents: list[dict] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer with before serving normally
        self.maximum, self.restore_rate, self.time_scale = maximum, restore_rate, time_scale
        self.missing_customers: set[str] = set()  # gids the store does not know: mutations refuse them
        self.available, self.refilled_at = maximum, time.monotonic()
        self.ids = itertools.count(1)

    # --- HTTP ---------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.path == "/_fake/state":
            return self._json(self.state())(environ, start_response)
        if request.path == "/_fake/control" and request.method == "POST":
            return self._json(self.control(request.get_json(force=True)))(environ, start_response)
        if request.path.startswith("/_fake/bulk/") and request.path.endswith(".jsonl"):
            path = self.bulk_file(request.path.rsplit("/", 1)[1].removesuffix(".jsonl"))
            if path is None:
                return Response("Not Found", status=404)(environ, start_response)
            return Response(
                wrap_file(environ, open(path, "rb")),
                content_type="application/jsonl",
                direct_passthrough=True,
            )(environ, start_response)
        if request.path == "/admin/oauth/authorize":
            return self.authorize(request)(environ, start_response)
        if request.path == "/admin/oauth/access_token" and request.method == "POST":
            return self.access_token_endpoint(request)(environ, start_response)
        if request.path != f"/admin/api/{API_VERSION}/graphql.json" or request.method != "POST":
            return Response("Not Found", status=404)(environ, start_response)
        return self.graphql(request)(environ, start_response)

    def graphql(self, request: Request) -> Response:
        token = request.headers.get("X-Shopify-Access-Token", "")
        known = token == self.access_token or self.token_valid(token)
        if not token or (not known and (self.access_token or self.issued)):
            return self._json({"errors": "[API] Invalid API key or access token (unrecognized login)"}, 401)
        with self.lock:
            if self.fail_next:
                return self._json({"errors": "Internal Server Error"}, self.fail_next.pop(0))
            body = request.get_json(force=True, silent=True) or {}
            return self._json(self.execute(body.get("query") or "", body.get("variables") or {}))

    @staticmethod
    def _json(body, status: int = 200) -> Response:
        return Response(json.dumps(body, default=str), status=status, content_type="application/json")

    # --- GraphQL ------------------------------------------------------------------------------------
    def execute(self, text: str, variables: dict) -> dict:
        problems = validate_document(text)
        if problems:
            self.invalid_documents.append({"query": text, "errors": problems})
            return {
                "errors": [
                    {"message": m, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}} for m in problems
                ]
            }
        document = graphql.parse(text)
        operation = next(d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode))
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)
        }
        cost = (MUTATION_COST if operation.operation == graphql.OperationType.MUTATION else QUERY_COST) * len(
            operation.selection_set.selections
        )
        if not self._spend(cost):
            return {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": self._cost(cost, None),
            }
        data, fields = {}, []
        for field in operation.selection_set.selections:
            args = {a.name.value: graphql.value_from_ast_untyped(a.value, variables) for a in field.arguments}
            resolved = getattr(self, "_" + field.name.value)(**args)
            fields.append((field.name.value, args))
            data[(field.alias or field.name).value] = project(resolved, field.selection_set, fragments)
        self.calls.append(  # one call per request, whatever its aliases
            {
                "field": fields[0][0],
                "fields": [name for name, _ in fields],
                "operation": operation.name.value if operation.name else None,
                "variables": variables,
                "args": fields[0][1],
            }
        )
        return {"data": data, "extensions": self._cost(cost, cost)}

    def _spend(self, cost: int) -> bool:
        now = time.monotonic()
        restored = (now - self.refilled_at) * self.restore_rate * self.time_scale
        self.available = min(self.maximum, self.available + restored)
        self.refilled_at = now
        if self.available < cost:
            return False
        self.available -= cost
        return True

    def _cost(self, requested: int, actual: int | None) -> dict:
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": self.maximum,
                    "currentlyAvailable": round(self.available, 1),
                    "restoreRate": self.restore_rate * self.time_scale,
                },
            }
        }

    def _customer(self, gid: str) -> dict:
        return self.customers.setdefault(
            gid,
            {
                "id": gid,
                "tags": [],
                "metafields": {},
                "defaultEmailAddress": {"marketingState": "NOT_SUBSCRIBED"},
            },
        )

    # --- root fields (named after Shopify's) -------------------------------------------------------------
    def _shop(self) -> dict:
        return self.shop

    def _discountCodeBasicCreate(self, basicCodeDiscount: dict) -> dict:
        code = basicCodeDiscount.get("code") or ""
        if code.upper() in {c.upper() for c in self.discounts}:
            return {
                "codeDiscountNode": None,
                "userErrors": [
                    {
                        "field": ["basicCodeDiscount", "code"],
                        "code": "TAKEN",
                        "message": "Code must be unique. Please try a different code.",
                    }
                ],
            }
        node = {"id": f"gid://shopify/DiscountCodeNode/{next(self.ids)}", "input": basicCodeDiscount}
        self.discounts[code] = node
        return {"codeDiscountNode": node, "userErrors": []}

    def _codeDiscountNodeByCode(self, code: str) -> dict | None:
        return next((n for c, n in self.discounts.items() if c.upper() == code.upper()), None)

    def _not_found(self, field: list[str]) -> dict:
        return {"field": field, "code": "NOT_FOUND", "message": "Customer does not exist"}

    def _tagsAdd(self, id: str, tags: list[str]) -> dict:  # noqa: A002 - Shopify's argument name
        if id in self.missing_customers:
            return {"node": None, "userErrors": [self._not_found(["id"])]}
        customer = self._customer(id)
        customer["tags"] = sorted(set(customer["tags"]) | set(tags))
        return {"node": customer, "userErrors": []}

    def _tagsRemove(self, id: str, tags: list[str]) -> dict:  # noqa: A002
        if id in self.missing_customers:
            return {"node": None, "userErrors": [self._not_found(["id"])]}
        customer = self._customer(id)
        customer["tags"] = sorted(set(customer["tags"]) - set(tags))
        return {"node": customer, "userErrors": []}

    def _metafieldsSet(self, metafields: list[dict]) -> dict:
        refused = [
            self._not_found(["metafields", str(i), "ownerId"])
            for i, entry in enumerate(metafields)
            if entry["ownerId"] in self.missing_customers
        ]
        if refused:  # Shopify sets all of them or none
            return {"metafields": None, "userErrors": refused}
        stored = []
        for entry in metafields:
            field = {k: entry.get(k) for k in ("namespace", "key", "value", "type")}
            self._customer(entry["ownerId"])["metafields"][f"{field['namespace']}.{field['key']}"] = field
            stored.append(field)
        return {"metafields": stored, "userErrors": []}

    def _customerEmailMarketingConsentUpdate(self, input: dict) -> dict:  # noqa: A002
        customer = self._customer(input["customerId"])
        customer["defaultEmailAddress"] = {"marketingState": input["emailMarketingConsent"]["marketingState"]}
        return {"customer": customer, "userErrors": []}

    # --- test and demo hooks ----------------------------------------------------------------------------
    def state(self) -> dict:
        with self.lock:
            return {
                "customers": self.customers,
                "discounts": {c: n["input"] for c, n in self.discounts.items()},
                "calls": len(self.calls),
                "invalid_documents": len(self.invalid_documents),
            }

    def control(self, settings: dict) -> dict:
        with self.lock:
            self.fail_next = list(settings.get("fail_next", self.fail_next))
            self.maximum = float(settings.get("maximum", self.maximum))
            self.restore_rate = float(settings.get("restore_rate", self.restore_rate))
            self.time_scale = float(settings.get("time_scale", self.time_scale))
            self.missing_customers = set(settings.get("missing_customers", self.missing_customers))
            if "history" in settings:
                self.history = {**self.history, **settings["history"]}
            if "bulk" in settings:
                self.bulk_misbehaviour = settings["bulk"]
            if "pages" in settings:
                self.page_misbehaviour = settings["pages"]
            if "webhook_url" in settings:
                self.webhook_url = settings["webhook_url"]
            if "available" in settings:
                self.available, self.refilled_at = float(settings["available"]), time.monotonic()
        return {"ok": True}


def project(value: Any, selection_set, fragments: dict) -> Any:
    """Keep exactly the selected fields of a resolved value (aliases, fragments and lists included)."""
    if selection_set is None or value is None:
        return value
    if isinstance(value, list):
        return [project(v, selection_set, fragments) for v in value]
    out = {}
    for selection in selection_set.selections:
        if isinstance(selection, graphql.FieldNode):
            name = selection.name.value
            item = "Customer" if name == "__typename" else value.get(name)
            out[(selection.alias or selection.name).value] = project(item, selection.selection_set, fragments)
        elif isinstance(selection, graphql.InlineFragmentNode):
            out.update(project(value, selection.selection_set, fragments))
        elif isinstance(selection, graphql.FragmentSpreadNode):
            out.update(project(value, fragments[selection.name.value].selection_set, fragments))
    return out


class FakeStoreServer:
    """Serve a FakeStore on 127.0.0.1 in a background thread; `origin` is its base URL."""

    def __init__(self, store: FakeStore | None = None, port: int = 0):
        self.store = store or FakeStore()
        self.server = make_server("127.0.0.1", port, self.store, threaded=True)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.store.origin = self.origin
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeStoreServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
