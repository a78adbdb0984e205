"""Processes that start on their own (gunicorn's workers, `lifecycle worker`, the scheduler) on one instance:
they migrate once without racing, and they all find the same database, wherever they were started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from plugin.store.db import recreate_database
from plugin.store.models import ActionRun, Shop
from tests.conftest import BACKENDS, NOW, POSTGRES_URL, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
BOOT = "from plugin import create_app; app = create_app(); print(app.extensions['lifecycle.db'].url)"


def app_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_") and k != "DATABASE_URL"}
    env.update(
        SHOPIFY_API_KEY="k",
        SHOPIFY_API_SECRET="s",
        LIFECYCLE_SECRET_KEY="x",
        REDIS_URL=REDIS_URL,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@pytest.fixture(params=BACKENDS)
def empty_database(request, tmp_path) -> str:
    """A database with no table at all, of each backend."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "fresh.sqlite3")
    base = make_url(POSTGRES_URL)
    return recreate_database(base.set(database=f"{base.database}_startup"))  # beside the suite's, never it


def test_processes_starting_at_once_on_an_empty_database_all_come_up(empty_database, tmp_path):
    # given: an empty database, and six processes that each build the app (and so migrate) at once
    env = app_environment(DATABASE_URL=empty_database, LIFECYCLE_INSTANCE_PATH=str(tmp_path / "instance"))
    # when
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", BOOT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in processes]
    # then: every one came up, and the schema is at the newest revision once
    assert [code for code, _ in results] == [0] * 6, [err for code, err in results if code]
    engine = create_engine(empty_database)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert versions == [migration_head()]


def test_processes_started_in_one_folder_share_its_instance(tmp_path):
    # given: no LIFECYCLE_INSTANCE_PATH and no DATABASE_URL, as a Procfile starts its processes
    env = app_environment()
    env.pop("LIFECYCLE_INSTANCE_PATH", None)
    # when: two processes boot from the same working directory
    urls = {
        subprocess.run(
            [sys.executable, "-c", BOOT], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    # then: both use the SQLite file in ./instance of that folder
    assert urls == {"sqlite:///" + str(tmp_path / "instance" / "lifecycle.sqlite3")}


def migration_head() -> str:
    """The newest revision, as Alembic reads the migrations folder (a single head: no branches)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "plugin/store/migrations"))
    [head] = ScriptDirectory.from_config(config).get_heads()
    return head


def test_a_run_left_running_before_the_lease_existed_gets_one_at_the_upgrade(empty_database):
    # given: a database at the revision before run leases, with a run a killed worker left running
    from alembic import command
    from alembic.config import Config

    from plugin.store.db import MIGRATIONS, migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", empty_database.replace("%", "%%"))
    command.upgrade(config, "0011")
    engine = create_engine(empty_database)
    with engine.begin() as connection:  # the tables' columns these rows use are the same at 0011
        connection.execute(insert(Shop.__table__).values(id=1, domain="a.myshopify.com"))
        for run_id, play, status in (
            (1, "welcome", "running"),
            (2, "stage_sync", "running"),
            (3, "welcome", "queued"),
        ):
            connection.execute(
                insert(ActionRun.__table__).values(
                    id=run_id,
                    shop_id=1,
                    play=play,
                    action="send_email",
                    cycle="c",
                    idempotency_key=f"k{run_id}",
                    trigger="t",
                    context={},
                    params={},
                    status=status,
                    created_at=NOW,
                    due_at=NOW,
                    attempts=1,
                )
            )
    # when: the app migrates to the newest revision
    migrate(empty_database)
    # then: the welcome left running has a lease the tick will see run out; nothing else has one
    with engine.connect() as connection:
        leases = dict(connection.execute(text("SELECT id, lease_until FROM action_runs ORDER BY id")).all())
    engine.dispose()
    assert leases[1] is not None and leases[2] is None and leases[3] is None
