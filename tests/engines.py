"""Real engines for the adapter tests: a redis server, celery workers, a dask cluster.

Each is a context manager that starts the real thing on 127.0.0.1, waits until it
answers (with a timeout, failing with its output when it does not) and stops it on exit
(with timeouts, killing what does not stop).  Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Seconds to wait for an engine to start or stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Ask *process* (and its session) to stop; kill them when they do not in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
    # Children that outlived their parent (prefork pool processes) go too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class Redis:
    """A real ``redis-server`` on 127.0.0.1 at a free port, persistence off."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.lines: list[str] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[Redis]:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(
                "redis-server is not installed: apt-get install -y redis-server "
                "(.ci/run installs it)"
            )
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                server,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", tmp,
                "--loglevel", "notice",
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            ready = threading.Event()
            # Reads the server's log until it ends, so that the pipe never fills up.
            reader = threading.Thread(target=self._read, args=(process, ready))
            reader.start()
            try:
                if not ready.wait(START_TIMEOUT) or process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}:\n"
                        + "".join(self.lines)
                    )
                yield self
            finally:
                _stop(process)
                reader.join(STOP_TIMEOUT)
                assert process.stdout is not None
                process.stdout.close()

    def _read(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if "Ready to accept connections" in line:
                ready.set()
        ready.set()  # the server ended: stop waiting (the caller sees no answer)


class CeleryWorker:
    """A real ``celery worker`` subprocess for the app in module *app*, run in *cwd*.

    By default it is the app of ``tests/celery_tasks.py`` and the worker consumes the
    queue named after its pool (``prefork``, ``solo``, ``threads``), so that tests
    choose a pool by routing to its queue.  The broker's URL is in the environment
    variables ``XLOCAL_TEST_BROKER`` and ``BROKER_URL``.
    """

    def __init__(
        self,
        broker: str,
        pool: str,
        *,
        concurrency: int = 2,
        app: str = "celery_tasks",
        cwd: Path = HERE,
        queue: str | None = None,
    ) -> None:
        self.broker = broker
        self.pool = pool
        self.concurrency = concurrency
        self.app = app
        self.cwd = cwd
        self.queue = queue or pool
        label = "".join(c if c.isalnum() else "-" for c in app)
        self.name = f"{label}-{pool}-{os.getpid()}@127.0.0.1"
        self._log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        """Everything the worker wrote so far."""
        return Path(self._log.name).read_bytes().decode(errors="replace")

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(self.cwd), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "XLOCAL_TEST_BROKER": self.broker,
            "BROKER_URL": self.broker,
            "PYTHONWARNINGS": "ignore",
        }
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            f"--pool={self.pool}", f"--concurrency={self.concurrency}",
            f"--queues={self.queue}", f"--hostname={self.name}",
            "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )

    def wait_ready(self, app: Any) -> None:
        """Return once the worker answers a ping through the broker."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery worker {self.name} did not start:\n{self.output()}"
                )

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)  # SIGTERM: celery's warm shutdown
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def close_app(app: Any) -> None:
    """Close the connections a Celery app opened in this thread, while redis runs.

    Results that are still referenced unsubscribe when they go, so garbage goes first;
    then the result backend's connections, then the broker's pools.
    """
    gc.collect()
    backend = getattr(app._local, "backend", None)
    if backend is not None:
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
        client = getattr(backend, "client", None)
        if client is not None:
            client.connection_pool.disconnect()
    app.close()


@contextlib.contextmanager
def celery_workers(
    app: Any, broker: str, pools: list[str]
) -> Iterator[dict[str, CeleryWorker]]:
    """Start one worker per pool at once, wait until each answers, stop them all."""
    workers = {pool: CeleryWorker(broker, pool) for pool in pools}
    try:
        for worker in workers.values():
            worker.start()
        for worker in workers.values():
            worker.wait_ready(app)
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


# -- the README's examples ---------------------------------------------------------


def readme_example(section: str) -> tuple[dict[str, str], list[str]]:
    """The files of the README example in *section*, and the output it promises.

    Each literal block of the section that starts with ``# NAME.py`` is a file; each
    ``# -> TEXT`` comment in them is one line that the example prints, in order.
    """
    lines = (HERE.parent / "README.txt").read_text().splitlines()
    start = lines.index(section) + 2
    end = next(
        (
            i - 1
            for i in range(start, len(lines))
            if lines[i] and set(lines[i]) <= set("=-") and lines[i - 1]
        ),
        len(lines),
    )
    files: dict[str, str] = {}
    expected: list[str] = []
    i = start
    while i < end:
        first = lines[i][4:] if lines[i].startswith("    ") else ""
        if first.startswith("# ") and first.split()[1].endswith(".py:"):
            name = first.split()[1].rstrip(":")
            block = []
            while i < end and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            files[name] = "\n".join(block).strip() + "\n"
            expected += [
                line.split("  # -> ", 1)[1] for line in block if "  # -> " in line
            ]
        i += 1
    return files, expected


def run_script(script: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Run ``python SCRIPT`` in *cwd*, with a timeout; the lines it printed."""
    done = subprocess.run(
        [sys.executable, script],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT * 2,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()
