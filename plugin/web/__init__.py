"""The HTTP edge: blueprints for webhooks, installs, the storefront app proxy and unsubscribe links."""
