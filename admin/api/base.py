"""The admin API's blueprint and what every page's calls share: the session token (checked before each
call; `g.shop_id` is the token's shop), the database, and input loaded by a marshmallow schema or refused
with the errors by field (422)."""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, abort, current_app, jsonify, make_response, request
from marshmallow import Schema, ValidationError

from admin.auth import authenticate, keep_private
from plugin.store.db import Database

bp = Blueprint("admin_api", __name__, url_prefix="/app/api")
bp.before_request(authenticate)  # every call: a valid session token of an installed shop, else 401
bp.after_request(keep_private)  # one shop's data: never cached


def db() -> Database:
    return current_app.extensions["lifecycle.db"]


def load_or_422(schema: Schema, **extra) -> dict:
    """The request's JSON object (with `extra`, e.g. a key from the URL) as `schema` loads it. Invalid
    input ends the request: 422 with the schema's errors by field."""
    try:
        return schema.load(dict(json_object(), **extra))
    except ValidationError as error:
        refuse(error.messages)


def json_object() -> dict:
    """The request's body as a JSON object ({} when empty); anything else ends the request with 422."""
    if not request.get_data(cache=True):
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than the parser goes: not an object we can read
        body = None
    if not isinstance(body, dict):
        refuse({"_schema": ["The body must be a JSON object."]})
    return body


def refuse(errors: dict) -> NoReturn:
    """End the request with 422 and `{"errors": {field: [message, …]}}`, the shape the pages show."""
    abort(make_response(jsonify({"errors": errors}), 422))
