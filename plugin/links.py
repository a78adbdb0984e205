"""The signed links an email carries and the web answers: unsubscribe, and stop a back-in-stock alert.

Built here, below both `actions` (which put them in emails) and `web` (which reads them back). A link
carries an opaque signed id (the run that sent the email, the alert), never the address in clear.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

RUN_SALT = "lifecycle-unsubscribe-run"
# Links sent before run ids named the address itself; they keep working (a sent link must, for a while).
LEGACY_SALT = "lifecycle-unsubscribe"


@dataclass(frozen=True)
class UnsubscribeLink:
    """What an unsubscribe link names: the run whose email carried it (or, for a link sent before run
    ids, a shop and an address)."""

    run_id: int | None = None
    shop_id: int | None = None
    email: str | None = None


def _serializer(secret: str, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(str(secret), salt=salt)


def url_for(settings: dict, run_id: int) -> str:
    """The signed, login-free unsubscribe link of one sent run: an opaque id, never the address."""
    token = _serializer(settings["SECRET_KEY"], RUN_SALT).dumps(int(run_id))
    return f"{settings['APP_URL'].rstrip('/')}/unsubscribe/{token}"


def read_unsubscribe_token(token: str) -> UnsubscribeLink | None:
    """What an unsubscribe link names, or None when it is not ours."""
    secret = current_app.config["SECRET_KEY"]
    try:
        run_id = _serializer(secret, RUN_SALT).loads(token)
    except (BadSignature, ValueError, TypeError):
        run_id = None
    if isinstance(run_id, int) and not isinstance(run_id, bool):
        return UnsubscribeLink(run_id=run_id)
    try:
        shop_id, email = _serializer(secret, LEGACY_SALT).loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    if not isinstance(shop_id, int) or not isinstance(email, str):
        return None
    return UnsubscribeLink(shop_id=shop_id, email=email)


ALERT_SALT = "lifecycle-stock-alert"


def alert_cancel_url(settings: dict, subscription_id: int) -> str:
    """The signed link that stops one back-in-stock alert."""
    token = URLSafeSerializer(str(settings["SECRET_KEY"]), salt=ALERT_SALT).dumps(subscription_id)
    return f"{settings['APP_URL'].rstrip('/')}/alerts/{token}"


def read_alert_token(token: str) -> int | None:
    """The back-in-stock subscription an alert link names, or None when it is not ours."""
    try:
        value = URLSafeSerializer(str(current_app.config["SECRET_KEY"]), salt=ALERT_SALT).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, int) else None
