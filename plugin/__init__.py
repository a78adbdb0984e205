"""Lifecycle: a Shopify app that turns a store's webhooks into customer-lifecycle stages and actions."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def instance_path() -> str:
    """LIFECYCLE_INSTANCE_PATH, else `instance/` in the working directory: the same for every process a
    Procfile or a shell starts in one folder, however the package was installed (Flask's own default sits
    beside the imported package, which differs between a checkout and an installed copy)."""
    return os.path.abspath(os.environ.get("LIFECYCLE_INSTANCE_PATH") or "instance")


def create_app(test_config: dict[str, Any] | None = None, *, migrate: bool = True) -> Flask:
    """Build the app: settings (environment, then test_config) → database → Redis → blueprints → the
    webhook receiver in front."""
    # Imported here, not at the top: this file runs before any `plugin.…` module is imported, and the
    # pure core (`plugin.core`) must load without Flask, SQLAlchemy or Redis (the flaskr factory's way).
    from flask import Flask

    import admin
    import admin.api
    from plugin.config import load_config
    from plugin.pipeline import queue
    from plugin.shopify.verify import WebhookVerifier
    from plugin.store.db import Database, database_url
    from plugin.store.db import migrate as migrate_database
    from plugin.web import install, storefront, unsubscribe, webhooks
    from plugin.web.ledger_writer import LedgerWriter

    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path())
    app.config.update(load_config(overrides=test_config))
    logging.basicConfig(
        level=app.config.get("LOG_LEVEL", logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )

    # Derived once: where emails go without SMTP_URL.
    app.config["OUTBOX"] = app.config["OUTBOX"] or os.path.join(app.instance_path, "outbox")
    url = database_url(app.config["DATABASE_URL"], app.instance_path)
    if migrate:
        migrate_database(url)
    app.extensions["lifecycle.db"] = Database(url)
    app.extensions["lifecycle.redis"] = queue.connect(app.config["REDIS_URL"], app.instance_path)
    app.extensions["lifecycle.verifier"] = WebhookVerifier(app.config["WEBHOOK_SECRETS"])
    app.extensions["lifecycle.ledger"] = LedgerWriter(app.extensions)

    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(install.bp)
    app.register_blueprint(storefront.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin.api.bp)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    # POST /webhooks is answered below Flask, before any of its per-request work (see `web.webhooks`).
    app.wsgi_app = webhooks.WebhookReceiver(app.wsgi_app, app.config, app.extensions)
    return app
