"""The Celery app and tasks of tests/test_celery.py: imported by the tests and by the
real workers that tests/engines.py starts (``celery -A celery_tasks worker``).

Each task reports what it sees on the test xlocals, and the process it ran in.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery, Task, current_task
from celery.signals import task_postrun

from xlocal import xlocal
from xlocal.celery import install
from xlocal.local import Local, LocalStack

#: Portable names: ``user_id``, ``tenant``, ``trace``; ``db``, bound beside them, stays.
request = xlocal("tests.celery.request", portable={"user_id", "tenant", "trace"})
#: Not portable at all.
local_only = xlocal("tests.celery.local_only")

#: werkzeug-style stores, which keep what an execution writes until it is deleted.
store = Local()
stack: LocalStack[str] = LocalStack()

BROKER = os.environ.get("XLOCAL_TEST_BROKER", "redis://127.0.0.1:1/0")

app = Celery("celery_tasks", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="prefork",
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    result_expires=None,
)
installed = install(app)


#: What each worker thread had bound right after its last task ended, by thread.
after_last_task: dict[int, list[list[str]]] = {}


@task_postrun.connect(weak=False)
def _record_leftovers(task: Task, **_: Any) -> None:
    # Connected after install() connected xlocal.celery's receiver, so it runs after
    # it.  An eager task ends in its caller, where the caller's bindings are in force.
    if not task.request.is_eager:
        after_last_task[threading.get_ident()] = [dir(request), dir(local_only)]


#: A message header the tests publish beside the carrier, as a tracing system would.
TRACE_HEADER = "trace-id"


def view() -> dict[str, Any]:
    """What the running task sees on both test xlocals, and where it runs."""
    return {
        "request": {name: getattr(request, name) for name in dir(request)},
        "local_only": {name: getattr(local_only, name) for name in dir(local_only)},
        "pid": os.getpid(),
        "left": after_last_task.get(threading.get_ident(), [[], []]),
        "trace_id": _header(TRACE_HEADER),
    }


def _header(name: str) -> Any:
    """A custom message header of the running task: on a worker an attribute of the
    request (Celery merges custom headers into the message's), in eager mode an item
    of ``request.headers``."""
    task_request = current_task.request
    value = vars(task_request).get(name)
    if value is None:
        value = (task_request.headers or {}).get(name)
    return value


@app.task
def seen(tag: Any = None) -> dict[str, Any]:
    """Report what this task sees."""
    return {**view(), "tag": tag}


@app.task
def step(previous: Any = None, tag: Any = None) -> dict[str, Any]:
    """A chain link: what it sees, and what the link before it returned."""
    return {**view(), "tag": tag, "previous": previous}


@app.task
def collect(results: list[Any], tag: Any = None) -> dict[str, Any]:
    """A chord body: what it sees, and what the header tasks returned."""
    return {**view(), "tag": tag, "results": results}


@app.task
def fails(tag: Any = None) -> None:
    """Bind more on top of the carried bindings, then raise."""
    with request(trace="inside"), local_only(leak="yes"):
        raise ValueError(f"task failed on purpose: {tag}")


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def retried(self: Task, tag: Any = None) -> dict[str, Any]:
    """Retry twice (each retry is a new message), then report what it sees."""
    before = view()
    if self.request.retries < 2:
        raise self.retry(countdown=0)
    return {**before, "tag": tag, "retries": self.request.retries}


@app.task
def spawns(tag: Any = None) -> dict[str, Any]:
    """Publish ``seen`` twice: under the carried bindings, then under a nested one."""
    plain = seen.delay(f"{tag}-plain")
    with request(trace=f"{tag}-nested"):
        nested = seen.delay(f"{tag}-nested")
    return {**view(), "tag": tag, "children": [plain.id, nested.id]}


@app.task
def eager_inside(tag: Any = None) -> dict[str, Any]:
    """Run ``seen`` eagerly (``apply()``) inside this task, under a nested binding."""
    with request(trace="eager"), local_only(hidden="yes"):
        inner = seen.apply(args=(tag,)).result
    return {**view(), "tag": tag, "inner": inner}


@app.task
def eager_then_seen(tag: Any = None) -> dict[str, Any]:
    """Run ``seen`` eagerly (``apply()``) inside this task, then report what it sees."""
    inner = seen.apply(args=(tag,)).result
    return {**view(), "tag": tag, "inner": inner}


@app.task(bind=True)
def replaced_by(self: Task, replacement: dict[str, Any]) -> Any:
    """Replace this task with the signature it is given, in its JSON form."""
    return self.replace(app.signature(replacement))


@app.task
def local_state(tag: str) -> dict[str, Any]:
    """Report the Local and LocalStack data this task sees, then write its own."""
    seen = {
        "store": dict(store),
        "top": stack.top,
        "proxied": [bool(store("user")), bool(stack())],
        "tag": tag,
        "pid": os.getpid(),
    }
    store.user = tag
    stack.push(tag)
    return seen
