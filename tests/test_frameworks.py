"""The framework recipes of README.txt, each served by a real server.

Each recipe is read from README.txt's "Web servers and frameworks" section as it is
printed there, written to a module, and served in a subprocess; concurrent requests
with different users must each get their own, also from the framework's error handler.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

import httpx
import pytest
from _servers import serve

README = Path(__file__).parent.parent / "README.txt"

#: recipe title -> (server, the app's attribute, whether it has /boom and a handler)
RECIPES = {
    "FastAPI": ("uvicorn-httptools", "app", True),
    "Starlette": ("hypercorn", "app", True),
    "Flask": ("gunicorn-gthread", "app", True),
    "Quart": ("hypercorn", "app", True),
    "Django (ASGI)": ("uvicorn-h11", "application", False),
    "Django (WSGI)": ("gunicorn-gevent", "application", False),
    "Plain WSGI": ("gunicorn-gthread", "app", False),
    "Plain ASGI": ("uvicorn-h11", "app", False),
}

#: Settings and URLs around the Django recipes, which show only the project's parts.
DJANGO_BEFORE = """\
from django.conf import settings

settings.configure(
    DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="test"
)
"""
DJANGO_AFTER = """
from django.urls import path

urlpatterns = [path("", hello)]
"""


def recipes() -> dict[str, str]:
    """Each recipe's code, by its title, from README.txt."""
    text = README.read_text()
    section = text.split("\nWeb servers and frameworks\n", 1)[1]
    section = re.split(r"\n[^\n]+\n=+\n", section, maxsplit=1)[0]
    found = {}
    for match in re.finditer(
        r"\n([^\n]+)\n-+\n(.*?)(?=\n[^\n]+\n-+\n|\Z)", section, re.S
    ):
        title, body = match.group(1), match.group(2)
        block = re.search(r"::\n\n((?:    [^\n]*\n|\n)+)", body)
        assert block, f"no code block under {title!r}"
        found[title] = textwrap.dedent(block.group(1))
    return found


def test_every_recipe_is_served() -> None:
    """README.txt has exactly the recipes that the tests serve."""
    assert sorted(recipes()) == sorted(RECIPES)


async def _exchange(port: int, boom: bool) -> list[tuple[str, int, str]]:
    """Concurrent requests as different users, and as nobody; what each got back."""
    users = [f"user{i}" for i in range(20)]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def get(path: str, user: str | None) -> tuple[str, int, str]:
            headers = {"X-User": user} if user else {}
            response = await client.get(path, headers=headers)
            return user or "anonymous", response.status_code, response.text

        calls = [get("/", user) for user in [*users, None]]
        if boom:
            calls += [get("/boom", user) for user in users[:5]]
        return list(await asyncio.gather(*calls))


def _need_fastapi() -> None:
    pytest.importorskip(
        "fastapi",
        reason="fastapi is not installed here: its pydantic-core has no build for "
        "this interpreter (PyPy 3.9), see the test extra",
    )


@pytest.mark.parametrize("title", RECIPES)
def test_recipe(title: str, tmp_path: Path) -> None:
    """The recipe, served for real: every request and error handler sees its user."""
    server, attribute, boom = RECIPES[title]
    if title == "FastAPI":
        _need_fastapi()
    code = recipes()[title]
    if title.startswith("Django"):
        code = DJANGO_BEFORE + code + DJANGO_AFTER
    (tmp_path / "recipe.py").write_text(code)
    with serve(server, f"recipe:{attribute}", path=[tmp_path]) as served:
        try:
            results = asyncio.run(_exchange(served.port, boom))
        except httpx.HTTPError:  # pragma: no cover - shows why
            pytest.fail(f"{title} under {server} failed:\n{served.tail()}")
    for user, status, text in results:
        if status == 500:
            assert boom
            assert text == f"sorry {user}"
        else:
            assert (status, text) == (200, f"hello {user}"), served.tail()
    assert sum(status == 500 for _, status, _ in results) == (5 if boom else 0)


def test_fastapi_add_middleware_leaves_the_error_handler_unbound(
    tmp_path: Path,
) -> None:
    """With add_middleware, FastAPI's Exception handler runs outside the binding."""
    _need_fastapi()
    code = recipes()["FastAPI"]
    last = 'app = XlocalMiddleware(api, xcurrent, factories={"user": user})\n'
    assert code.endswith(last)
    code = code.replace(last, "")
    code += 'api.add_middleware(XlocalMiddleware, xcurrent, factories={"user": user})\n'
    code += "app = api\n"
    (tmp_path / "recipe.py").write_text(code)
    with serve("uvicorn-h11", "recipe:app", path=[tmp_path]) as served:
        results = asyncio.run(_exchange(served.port, boom=True))
        log = served.tail()
    for user, status, text in results:
        if status == 500:
            assert text == "Internal Server Error"
        else:
            assert (status, text) == (200, f"hello {user}")
    assert "'user' is not bound on <xlocal 'xcurrent'>" in log
