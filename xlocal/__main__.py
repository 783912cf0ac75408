"""``python -m xlocal``: watch handlers in threads, greenlets and tasks stay isolated.

A tiny "server" binds its name, then spawns one handler per request in a new thread,
greenlet or asyncio task, with ``request`` bound in the new unit.  Each handler lets
the others run while it is still inside its binding, then reads what it sees.  With
isolation, every handler reads its own request, and the server's name came along.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import sys
import threading
from collections.abc import Callable

from . import Thread, __version__, wrap, xlocal

xcurrent = xlocal("xcurrent")

REQUESTS = 3


def handle(pause: Callable[[], object]) -> str:
    """A handler deep in an application: it reads state that nobody passed it."""
    pause()  # the other handlers run now, each inside its own binding
    return f"{xcurrent.request:<12} read {xcurrent.request!r} from {xcurrent.server!r}"


def in_threads() -> list[str]:
    barrier = threading.Barrier(REQUESTS, timeout=10)
    lines: list[str] = []
    threads = [
        Thread(
            target=xcurrent(request=f"thread-{i}")(
                lambda: lines.append(handle(barrier.wait))
            )
        )
        for i in range(REQUESTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(lines)


def in_greenlets() -> list[str]:
    try:
        gevent = importlib.import_module("gevent")
    except ImportError:
        return ["(gevent is not installed: pip install 'xlocal[gevent]')"]
    pause = functools.partial(gevent.sleep, 0)
    jobs = [
        gevent.spawn(wrap(xcurrent(request=f"greenlet-{i}")(handle)), pause)
        for i in range(REQUESTS)
    ]
    return [job.get(timeout=10) for job in jobs]


def in_tasks() -> list[str]:
    async def handle_async() -> str:
        await asyncio.sleep(0)  # the other tasks run now
        return handle(lambda: None)

    async def serve() -> list[str]:
        # A task starts with a copy of its creator's bindings: no helper needed.
        tasks = [
            asyncio.create_task(xcurrent(request=f"task-{i}")(handle_async)())
            for i in range(REQUESTS)
        ]
        return list(await asyncio.gather(*tasks))

    return asyncio.run(serve())


def main() -> None:
    print(f"xlocal {__version__}: a server binds server='demo' and spawns one handler")
    print(f"per request ({REQUESTS} at once) with request bound in the new unit.\n")
    with xcurrent(server="demo"):
        for title, run in [
            ("threads (xlocal.Thread)", in_threads),
            ("gevent greenlets (gevent.spawn(xlocal.wrap(...)))", in_greenlets),
            ("asyncio tasks", in_tasks),
        ]:
            print(title)
            for line in run():
                print("   ", line)
        seen: list[str] = []
        plain = threading.Thread(target=lambda: seen.extend(dir(xcurrent)))
        plain.start()
        plain.join()
        print(
            f"\na plain threading.Thread starts with {seen or 'nothing bound'}", end=""
        )
        if getattr(sys.flags, "thread_inherit_context", 0):
            print(" (-X thread_inherit_context: it inherits its creator's)", end="")
        print(";")
        print(f"the server still reads server={xcurrent.server!r};")
    print(f"after its with-block: {xcurrent!r}")


if __name__ == "__main__":
    main()
