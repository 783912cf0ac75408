"""``python -m xlocal``: watch handlers in threads, greenlets and tasks stay isolated.

Each handler binds its own request, lets the other handlers run while still inside its
with-block, then reads ``xcurrent.request`` back.  With isolation, every handler reads
its own request, and the caller's binding is untouched.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable

from . import __version__, xlocal

xcurrent = xlocal("xcurrent")

HANDLERS = 3


def handle(pause: Callable[[], object]) -> str:
    """A handler deep in an application: it reads the request nobody passed it."""
    pause()  # the other handlers run now, each inside its own with-block
    return f"read {xcurrent.request!r}"


def serve(kind: str, i: int, pause: Callable[[], object]) -> str:
    request = f"{kind}-{i}"
    with xcurrent(request=request):
        return f"  {request:<12} bound {request!r:<14} {handle(pause)}"


def in_threads() -> list[str]:
    barrier = threading.Barrier(HANDLERS, timeout=10)
    lines = [""] * HANDLERS

    def run(i: int) -> None:
        lines[i] = serve("thread", i, barrier.wait)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(HANDLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lines


def in_greenlets() -> list[str]:
    try:
        gevent = importlib.import_module("gevent")
    except ImportError:
        return ["  (gevent is not installed: pip install 'xlocal[gevent]')"]
    jobs = [
        gevent.spawn(serve, "greenlet", i, lambda: gevent.sleep(0))
        for i in range(HANDLERS)
    ]
    return [job.get(timeout=10) for job in jobs]


def in_tasks() -> list[str]:
    async def serve_async(i: int) -> str:
        request = f"task-{i}"
        with xcurrent(request=request):
            await asyncio.sleep(0)  # the other tasks run now
            return f"  {request:<12} bound {request!r:<14} read {xcurrent.request!r}"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(serve_async(i) for i in range(HANDLERS))))

    return asyncio.run(main())


def main() -> None:
    print(f"xlocal {__version__}: {HANDLERS} handlers per kind run at once; each binds")
    print("its own request, lets the others run, then reads xcurrent.request.\n")
    with xcurrent(request="main"):
        for title, run in [
            ("threads", in_threads),
            ("gevent greenlets", in_greenlets),
            ("asyncio tasks", in_tasks),
        ]:
            print(f"{title}:")
            print("\n".join(run()))
        print(f"\nthe caller still reads {xcurrent.request!r};", end=" ")
        seen: list[str] = []
        thread = threading.Thread(target=lambda: seen.extend(dir(xcurrent)))
        thread.start()
        thread.join()
        print(f"a new thread starts with {seen or 'nothing bound'}.")
    print(f"after the with-block: {xcurrent!r}")


if __name__ == "__main__":
    main()
