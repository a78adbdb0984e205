"""Lifecycle: a Shopify app that turns a store's webhooks into customer-lifecycle stages and actions."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

from plugin import queue, storage
from plugin.config import load_config
from plugin.verify import WebhookVerifier


def instance_path() -> str:
    """LIFECYCLE_INSTANCE_PATH, else `instance/` in the working directory: the same for every process a
    Procfile or a shell starts in one folder, however the package was installed (Flask's own default sits
    beside the imported package, which differs between a checkout and an installed copy)."""
    return os.path.abspath(os.environ.get("LIFECYCLE_INSTANCE_PATH") or "instance")


def create_app(test_config: dict[str, Any] | None = None, *, migrate: bool = True) -> Flask:
    """Build the app: settings (environment, then test_config) → database → Redis → blueprints."""
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path())
    app.config.update(load_config(overrides=test_config))
    logging.basicConfig(
        level=app.config.get("LOG_LEVEL", logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )

    # Derived once: where emails go without SMTP_URL.
    app.config["OUTBOX"] = app.config["OUTBOX"] or os.path.join(app.instance_path, "outbox")
    url = storage.database_url(app.config["DATABASE_URL"], app.instance_path)
    if migrate:
        storage.migrate(url)
    app.extensions["lifecycle.db"] = storage.Database(url)
    app.extensions["lifecycle.redis"] = queue.connect(app.config["REDIS_URL"], app.instance_path)
    app.extensions["lifecycle.verifier"] = WebhookVerifier(
        app.config["SHOPIFY_API_KEY"], app.config["WEBHOOK_SECRETS"]
    )

    import admin
    import admin.api
    from plugin import oauth, storefront, unsubscribe, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(storefront.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin.api.bp)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app
