"""The app with one extra route, /bare: reads the body and answers 200 (the benchmark's baseline)."""

from __future__ import annotations

from flask import request

from plugin import create_app


def create():
    app = create_app()

    @app.post("/bare")
    def bare():
        request.get_data(cache=False)
        return "", 200

    return app
