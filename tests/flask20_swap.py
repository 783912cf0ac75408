"""Run Flask 2.0 with xlocal.local in place of werkzeug.local: the one-line swap.

Flask 2.0 imports ``ContextVar``, ``LocalProxy`` and ``LocalStack`` from
werkzeug.local.  This script puts ``xlocal.local`` in its place before Flask is
imported, then serves requests through Flask's test client, in threads and with
async views, and checks that every request sees its own ``request`` and ``g``.
.ci/run installs Flask 2.0 and werkzeug 2.0 into a throwaway directory and runs::

    PYTHONPATH=DIR python tests/flask20_swap.py

It exits non-zero, with a traceback, if anything does not hold.
"""

from __future__ import annotations

import sys
import threading

import xlocal.local

sys.modules["werkzeug.local"] = xlocal.local

import flask  # noqa: E402
from flask import Flask, g, request  # noqa: E402


def main() -> None:
    assert flask.__version__.startswith("2.0."), flask.__version__
    assert type(request) is xlocal.local.LocalProxy
    app = Flask(__name__)

    @app.route("/<name>")
    def hello(name: str) -> str:
        g.name = name
        return f"{request.path} {g.name}"

    @app.route("/async/<name>")
    async def hello_async(name: str) -> str:
        return f"{request.path} {name}"

    client = app.test_client()
    assert client.get("/ann").data == b"/ann ann"
    assert client.get("/async/bob").data == b"/async/bob bob"

    seen: dict[int, str] = {}
    barrier = threading.Barrier(20, timeout=30)

    def handle(i: int) -> None:
        with app.test_request_context(f"/{i}"):
            barrier.wait()
            seen[i] = request.path

    threads = [threading.Thread(target=handle, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {i: f"/{i}" for i in range(20)}, seen
    outside = ""
    try:
        request.path  # noqa: B018
    except RuntimeError as error:
        outside = str(error)
    assert "outside of request context" in outside, outside
    print(f"Flask {flask.__version__} runs on xlocal.local: 3 checks passed")


if __name__ == "__main__":
    main()
