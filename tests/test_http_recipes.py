"""README.txt's framework recipes for xlocal.http, each run as written.

tests/_http_recipes.py reads the recipe lines from README.txt's "Across services"
section and runs each where its framework makes the app, in a process of its own
(Django is configured once per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_every_framework_recipe_binds_a_signed_carrier_and_refuses_a_forged_one() -> (
    None
):
    done = subprocess.run(
        [sys.executable, "_http_recipes.py"],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recipes"] == [
        "Django, in wsgi.py or asgi.py",
        "FastAPI or Starlette, under uvicorn or hypercorn",
        "Flask, under gunicorn",
        "Quart, under hypercorn (and its request timers off: see Known limits)",
    ]
    frameworks = ["Flask", "Starlette", "Quart", "Django (WSGI)", "Django (ASGI)"]
    if sys.implementation.name == "cpython":  # FastAPI is tested on CPython only
        frameworks.insert(2, "FastAPI")
    assert list(report["results"]) == frameworks
    for name, (signed, forged, none) in report["results"].items():
        assert signed[0] == 200, name
        assert json.loads(signed[1]) == {"user": "ann"}, name
        assert forged == [400, "invalid xlocal carrier\n"], name
        assert none[0] == 200, name
        assert json.loads(none[1]) == {"user": None}, name
    # The refusal is logged once for each framework's forged request.
    assert done.stderr.count("refused the xlocal carrier of GET '/'") == len(frameworks)
