"""What a parent process resolved, handed down to the processes it starts.

`lifecycle demo` and `lifecycle serve` start children (gunicorn and its workers, RQ workers) with another
working directory, perhaps another `plugin` on their path. Left to themselves, each would work out its own
instance folder (Flask puts it beside the package it imported), so a child could write one SQLite file while
the parent reads another. The parent resolves the instance folder, database, Redis and outbox once and puts
them in the environment every child inherits, and starts children from the folder holding the very package
it runs, so parent and children run the same code against the same data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flask import Flask

import plugin

# The directory that holds the `plugin` package this process imported (site-packages, or a checkout).
PACKAGE_ROOT = str(Path(plugin.__file__).resolve().parent.parent)


def hand_down(app: Flask) -> dict[str, str]:
    """Put this app's resolved instance folder, database, Redis and outbox into os.environ; return them."""
    resolved = {
        "LIFECYCLE_INSTANCE_PATH": app.instance_path,
        "DATABASE_URL": app.extensions["lifecycle.db"].url,
        "REDIS_URL": redis_url(app),
        "LIFECYCLE_OUTBOX": app.config["OUTBOX"],
    }
    os.environ.update(resolved)
    return resolved


def redis_url(app: Flask) -> str:
    """REDIS_URL as configured, or the embedded server's socket (which lives as long as this process)."""
    return app.config["REDIS_URL"] or "unix://" + app.extensions["lifecycle.redis"].socket_file


def start_child(arguments: list[str]) -> subprocess.Popen:
    """Start `python -m …` with this process's interpreter, from the folder of this process's package."""
    return subprocess.Popen([sys.executable, "-m", *arguments], cwd=PACKAGE_ROOT, env=dict(os.environ))
