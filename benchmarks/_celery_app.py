"""The Celery apps that ``benchmarks.engines`` times: one plain, one with install().

Each has its own default queue, and one task that returns at once; one worker (``-A
benchmarks._celery_app:carrying --queues=plain,carrying``) serves both.
"""

from __future__ import annotations

import os

from celery import Celery

from xlocal import xlocal
from xlocal.celery import install

#: Three small values are bound for both apps; only the carrying app carries them.
request = xlocal("benchmarks.celery.request", portable=True)

BROKER = os.environ.get("XLOCAL_TEST_BROKER", "redis://127.0.0.1:1/0")


def _app(name: str) -> Celery:
    app = Celery(name, broker=BROKER, backend=BROKER)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=name,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name="bench.noop")(noop)
    return app


def noop(i: int) -> int:
    """The task: the engine's own cost, and nothing else."""
    return i


plain = _app("plain")
carrying = _app("carrying")
install(carrying)
