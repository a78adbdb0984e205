"""The signed links an email carries and the web answers: unsubscribe, and stop a back-in-stock alert.

Built here, below both `actions` (which put them in emails) and `web` (which reads them back).
"""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

SALT = "lifecycle-unsubscribe"


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(str(secret), salt=SALT)


def url_for(settings: dict, shop_id: int, email: str) -> str:
    """The signed, login-free unsubscribe link of one address at one shop."""
    token = _serializer(settings["SECRET_KEY"]).dumps([shop_id, email.strip().lower()])
    return f"{settings['APP_URL'].rstrip('/')}/unsubscribe/{token}"


def read_unsubscribe_token(token: str) -> tuple[int, str] | None:
    """The (shop id, address) an unsubscribe link names, or None when it is not ours."""
    try:
        shop_id, email = _serializer(current_app.config["SECRET_KEY"]).loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    return int(shop_id), str(email)


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
