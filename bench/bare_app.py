"""The app with two extra endpoints, the benchmarks' baselines; both read the body and answer 200:

- `/bare`, a Flask route: what any endpoint of the app costs (request context, session, routing);
- `/bare-wsgi`, answered below Flask as `POST /webhooks` is (`web.webhooks.WebhookReceiver`): what the
  server alone costs, so the webhook endpoint's own work is measured against it too.
"""

from __future__ import annotations

from flask import request

from plugin import create_app


def create():
    app = create_app()

    @app.post("/bare")
    def bare():
        request.get_data(cache=False)
        return "", 200

    below_flask = app.wsgi_app

    def bare_wsgi(environ, start_response):
        if environ.get("PATH_INFO") != "/bare-wsgi":
            return below_flask(environ, start_response)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    app.wsgi_app = bare_wsgi
    return app
