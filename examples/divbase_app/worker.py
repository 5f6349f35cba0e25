"""`divbase-worker`: the Celery-worker stand-in. Starts tasks from DivBase's task_history, one at a time, until
SIGTERM; a started task has its task_started_at row (queries.claim_task)."""

from __future__ import annotations

import logging
import signal
import threading
import time

from divbase_migrations.compat import require_compatible
from sqlalchemy import create_engine

from . import queries
from .settings import from_env

log = logging.getLogger("divbase_app.worker")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = from_env()
    engine = create_engine(
        settings.database_url,
        pool_size=1,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": "divbase-worker"},
    )
    require_compatible(engine, settings.release)  # raises IncompatibleSchema: the pod fails, visibly
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    done = 0
    log.info("worker of release %s started", settings.release)
    while not stop.is_set():
        try:
            with engine.begin() as conn:
                task = queries.claim_task(conn)
            if task is None:
                stop.wait(0.2)
                continue
            time.sleep(0.05)  # the "work"; its result would go to Celery's result tables, not modelled here
            done += 1
        except Exception:  # a worker survives a database blip, like Celery's
            log.exception("task loop error")
            stop.wait(1.0)
    log.info("worker stopped after %d tasks", done)
    engine.dispose()
