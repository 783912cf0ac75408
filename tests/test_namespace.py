"""Typed namespaces: subclasses of xlocal that declare names, types and defaults."""

from __future__ import annotations

import contextvars
import sys
import threading
import types
import typing
from typing import Annotated, Any, ClassVar

import pytest
from conftest import Tagged

import xlocal as xl
from xlocal import capture, new, xlocal
from xlocal.portable import UnportableError, extract, inject

TIMEOUT = 60


class User:
    """A value to bind."""

    def __init__(self, name: str) -> None:
        self.name = name


class Current(xlocal):
    """A typed namespace with a declared name, a default, and its own attributes."""

    user: User
    tenant: str = "public"
    instances: ClassVar[int] = 0
    _private: int

    def describe(self) -> str:
        return f"{self.user.name}@{self.tenant}"

    @property
    def loud_tenant(self) -> str:
        return self.tenant.upper()

    @classmethod
    def kind(cls) -> str:
        return cls.__name__

    @staticmethod
    def helper() -> str:
        return "helped"


@pytest.fixture
def current() -> Current:
    """A fresh typed namespace."""
    return new(Current, "current")


ann = User("ann")


def test_declared_names_bind_and_read(current: Current) -> None:
    """Declared names bind and read as on any xlocal, and nest."""
    with current(user=ann):
        assert current.user is ann
        with current(tenant="acme"):
            assert (current.user, current.tenant) == (ann, "acme")
        assert current.tenant == "public"
    with pytest.raises(AttributeError, match=r"^'user' is not bound on <Current"):
        current.user  # noqa: B018


def test_default_read_when_unbound(current: Current) -> None:
    """A declared default is read outside any binding, in any thread, and a binding
    shadows it."""
    assert current.tenant == "public"
    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.append(current.tenant))
    t.start()
    t.join(TIMEOUT)
    assert seen == ["public"]
    with current(tenant="acme"):
        assert current.tenant == "acme"
    assert current.tenant == "public"


def test_defaults_are_not_stored(current: Current) -> None:
    """Reading defaults stores nothing: the context holds no entry for the xlocal."""
    var = object.__getattribute__(current, "_var")
    assert current.tenant == "public"
    assert var not in contextvars.copy_context()
    with current(user=ann):
        assert var in contextvars.copy_context()
    assert var not in contextvars.copy_context()


def test_methods_properties_and_class_attributes(current: Current) -> None:
    """Methods, properties, class and static methods and class variables work, and
    self reads the bindings."""
    with current(user=ann, tenant="acme"):
        assert current.describe() == "ann@acme"
        assert current.loud_tenant == "ACME"
    assert current.kind() == "Current"
    assert current.helper() == "helped"
    assert current.instances == 0


def test_undeclared_names_are_refused(current: Current) -> None:
    """Binding a name the namespace does not declare is refused when the binding is
    made, listing the declared names."""
    with pytest.raises(
        TypeError,
        match=r"^cannot bind 'usr' on <Current 'current'>: it is not one of its "
        r"declared names, which are tenant, user$",
    ):
        current(usr=ann)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("describe", "method"),
        ("loud_tenant", "property"),
        ("kind", "class method"),
        ("helper", "static method"),
        ("instances", "class attribute"),
    ],
)
def test_own_attributes_cannot_be_bound(current: Current, name: str, kind: str) -> None:
    """The class's own attributes are never names to bind."""
    with pytest.raises(
        TypeError,
        match=rf"^cannot bind {name!r} on <Current 'current'>: Current defines it as "
        rf"a {kind}, not a name to bind$",
    ):
        current(**{name: 1})


def test_private_annotations_are_not_names(current: Current) -> None:
    """Annotated names starting with _ are not declared names."""
    with pytest.raises(ValueError, match=r"reserved for the xlocal itself"):
        current(_private=1)
    assert "_private" not in dir(current)


def test_reading_an_undeclared_name(current: Current) -> None:
    """Reading a name the namespace does not declare says which names it has."""
    with pytest.raises(
        AttributeError,
        match=r"^'usr' is not a declared name of <Current 'current'>: its names are "
        r"tenant, user$",
    ):
        current.usr  # type: ignore[misc]  # noqa: B018
    assert not hasattr(current, "usr")


def test_dir_and_repr(current: Current) -> None:
    """dir lists declared names and the class's own; repr shows bound and declared."""
    assert dir(current) == [
        "describe",
        "helper",
        "instances",
        "kind",
        "loud_tenant",
        "tenant",
        "user",
    ]
    assert repr(current) == "<Current 'current' unbound; declared: tenant, user>"
    with current(user=ann):
        assert repr(current) == (
            "<Current 'current' bound: user; declared: tenant, user>"
        )


def test_snapshot_holds_bindings_not_defaults(current: Current) -> None:
    """A snapshot's bindings are what was bound; defaults are the class's."""
    with current(user=ann):
        snapshot = capture()
    assert dict(snapshot.bindings(current)) == {"user": ann}
    assert snapshot.run(lambda: (current.user, current.tenant)) == (ann, "public")


def test_inheritance_adds_names(current: Current) -> None:
    """A subclass of a typed namespace adds names and may change a default."""

    class Request(Current):
        path: str
        tenant: str = "internal"

    request = new(Request, "request")
    assert request.tenant == "internal"
    with request(user=ann, path="/"):
        assert (request.path, request.describe()) == ("/", "ann@internal")
    with pytest.raises(TypeError, match=r"which are path, tenant, user$"):
        request(other=1)


def test_default_changed_without_annotation() -> None:
    """A subclass may give a declared name a new default without annotating it."""

    class Internal(Current):
        tenant = "internal"

    assert new(Internal, "internal").tenant == "internal"


def test_declared_name_that_is_also_a_method() -> None:
    """A name declared and defined as a method is refused when the class is made."""
    with pytest.raises(
        TypeError,
        match=r"^Bad declares 'user' as a name to bind, and Bad defines it as a "
        r"method: rename one of them$",
    ):

        class Bad(xlocal):
            user: str

            def user(self) -> str:  # type: ignore[no-redef]
                return ""


def test_declared_name_that_is_a_method_of_a_base() -> None:
    """A subclass cannot declare a name its base defines as a method."""
    with pytest.raises(TypeError, match=r"and Current defines it as a method"):

        class Bad(Current):
            describe: str  # type: ignore[assignment]


def test_init_subclass_hooks_run_once_per_class() -> None:
    """A user's __init_subclass__, on an xlocal subclass or on a mixin beside it, runs
    once for each class made from it, with the class's keyword arguments, and not for
    the class of its own that each xlocal gets."""
    made: list[tuple[str, dict[str, Any]]] = []

    class Registered:
        def __init_subclass__(cls, **kwargs: Any) -> None:
            made.append((f"mixin: {cls.__name__}", kwargs))
            super().__init_subclass__()

    class Base(xlocal):
        def __init_subclass__(cls, **kwargs: Any) -> None:
            made.append((f"base: {cls.__name__}", kwargs))
            super().__init_subclass__()

    class Request(Base, tag="request"):
        user: str = "nobody"

    class Mixed(Registered, xlocal, flag=True):
        pass

    assert made == [
        ("base: Request", {"tag": "request"}),
        ("mixin: Mixed", {"flag": True}),
    ]
    made.clear()
    request, mixed = Request("request"), new(Mixed, "mixed")
    Request("another"), Mixed("another")
    assert made == []
    with request(user="ann"), mixed(anything=1):
        assert (request.user, mixed.anything) == ("ann", 1)
    assert isinstance(request, Request)
    assert type(request).__base__ is Request

    class Later(Request):
        pass

    assert made == [("base: Later", {})]


def test_open_subclass_with_methods(make_xlocal: Any) -> None:
    """A subclass that declares no names stays open, and its methods work and cannot
    be bound."""

    class Open(xlocal):
        def greeting(self) -> str:
            return f"hello {self.user}"

    o = new(Open, "o")
    with o(user="ann", anything=1):
        assert (o.greeting(), o.anything) == ("hello ann", 1)
    with pytest.raises(TypeError, match=r"Open defines it as a method"):
        o(greeting=1)
    with pytest.raises(AttributeError, match=r"^'other' is not bound on <Open 'o'>"):
        o.other  # noqa: B018


def test_private_and_special_attributes_read_as_on_any_object(
    current: Current,
) -> None:
    """On a typed namespace, names starting with '_' are the object's own: special
    attributes read as on any object, and a missing private one is Python's plain
    AttributeError, not an undeclared-name error."""
    assert current.__class__ is type(current)
    assert current.__doc__ == Current.__doc__
    with pytest.raises(
        AttributeError, match=r"^'Current' object has no attribute '_missing'$"
    ):
        current._missing  # noqa: B018
    with pytest.raises(
        AttributeError, match=r"^'Current' object has no attribute '_'$"
    ):
        current._  # noqa: B018


def test_subclass_keywords_reach_other_bases() -> None:
    """Class keywords of an xlocal subclass reach its other bases' __init_subclass__,
    and unknown ones are refused as for any class."""

    class Tenant(xlocal, Tagged, tag="tenant"):
        name: str

    assert Tenant.tag == "tenant"
    assert new(Tenant, "t").tag == "tenant"
    with pytest.raises(TypeError, match="keyword argument"):  # worded per interpreter

        class Odd(xlocal, colour="red"):  # type: ignore[call-arg]
            name: str


def test_mixin_annotations_are_not_names() -> None:
    """Only xlocal subclasses declare names: a plain mixin's annotations do not."""

    class Labelled:
        label: str = "shop"

    class Shop(xlocal, Labelled):
        owner: str

    shop = new(Shop, "shop")
    assert repr(shop) == "<Shop 'shop' unbound; declared: owner>"
    assert shop.label == "shop"


def test_dynamic_class_with_a_bad_name_is_refused() -> None:
    """A class made at run time whose annotations hold a name that can never be bound
    is refused when it is made, saying why."""
    with pytest.raises(
        TypeError,
        match=r"^Bad cannot declare 'not a name': names must be Python identifiers$",
    ):
        type("Bad", (xlocal,), {"__annotations__": {"not a name": int}})


def test_evaluated_classvar_annotations_are_not_names() -> None:
    """ClassVar annotations that are objects, not strings (no ``from __future__
    import annotations``), bare or subscripted, declare no names."""
    counted_class = type(
        "Counted",
        (xlocal,),
        {"__annotations__": {"user": str, "count": ClassVar[int], "total": ClassVar}},
    )
    assert (
        repr(new(counted_class, "counted"))
        == "<Counted 'counted' unbound; declared: user>"
    )


#: A module without ``from __future__ import annotations`` (Python 3.14 defers its
#: annotations), whose typed namespace names a class defined after it.
FORWARD = """
from typing import ClassVar

from xlocal import new, xlocal


class Current(xlocal):
    user: {user}
    count: ClassVar[{user}]
    tenant: str = "public"


class User:
    pass


current = new(Current, "current")
"""

FORWARD_CASES = [pytest.param("'User'", id="string")]
if sys.version_info >= (3, 14):
    FORWARD_CASES.append(pytest.param("User", id="forward reference"))


@pytest.mark.parametrize("user", FORWARD_CASES)
def test_declared_names_without_future_annotations(user: str) -> None:
    """A typed namespace in a module that does not make annotations strings reads
    its declared names, class variables and defaults when it is made, also (3.14+)
    when a declared type names what the module defines after the class."""
    module = types.ModuleType("test_namespace_forward")
    # dont_inherit: not this file's own ``from __future__ import annotations``.
    code = compile(
        FORWARD.format(user=user), module.__name__, "exec", dont_inherit=True
    )
    exec(code, module.__dict__)
    current = module.current
    assert repr(current) == "<Current 'current' unbound; declared: tenant, user>"
    assert current.tenant == "public"
    with current(user=module.User()):
        assert isinstance(current.user, module.User)


def test_forward_reference_annotations() -> None:
    """Annotations that are forward references (what Python 3.14's forward-reference
    format gives for a name not defined yet) are read by their text: a ClassVar
    declares no name, any other type does."""
    made = type(
        "Forward",
        (xlocal,),
        {
            "__annotations__": {
                "user": typing.ForwardRef("User"),
                "count": typing.ForwardRef("ClassVar[int]"),
            }
        },
    )
    assert repr(new(made, "forward")) == "<Forward 'forward' unbound; declared: user>"


def test_redeclared_name_without_default_drops_the_base_default() -> None:
    """A subclass that declares a name again without a default has no default for
    it: the base class's default is not inherited by the new declaration."""

    class Base(xlocal):
        level: int = 1

    class Strict(Base):
        level: int

    assert new(Base, "base").level == 1
    strict = new(Strict, "strict")
    with pytest.raises(AttributeError, match=r"^'level' is not bound on <Strict"):
        strict.level  # noqa: B018


def test_class_call_makes_the_same(current: Current) -> None:
    """Calling the class, as for any xlocal, makes the same kind of object as new()."""
    other = Current("other")
    assert type(other).__base__ is Current
    with other(user=ann):
        assert other.describe() == "ann@public"


def test_new_refuses_other_classes() -> None:
    """new() takes a subclass of xlocal only."""
    with pytest.raises(TypeError, match=r"^new\(\) takes a subclass of xlocal, not 3$"):
        new(3, "x")  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"not <class 'int'>$"):
        new(int, "x")  # type: ignore[type-var]


def test_isolated_like_any_xlocal(current: Current) -> None:
    """Bindings of a typed namespace are per execution, as for any xlocal."""
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    seen: list[Any] = []

    def other() -> None:
        with current(tenant="other"):
            barrier.wait()
            barrier.wait()
            seen.append((current.tenant, hasattr(current, "user")))

    t = threading.Thread(target=other)
    t.start()
    with current(user=ann):
        barrier.wait()
        assert (current.user, current.tenant) == (ann, "public")
        barrier.wait()
    t.join(TIMEOUT)
    assert seen == [("other", False)]


def test_debug_mode_works_the_same(current: Current) -> None:
    """Debug mode binds and reads typed namespaces as plain ones."""
    xl.set_debug(True)
    try:
        with current(user=ann):
            assert current.describe() == "ann@public"
    finally:
        xl.set_debug(False)


def test_classvar_string_annotations() -> None:
    """ClassVar is recognised in string annotations, qualified or not."""

    class Vars(xlocal):
        a: ClassVar[int] = 1
        b: typing.ClassVar[int] = 2
        c: str

    assert dir(new(Vars, "v")) == ["a", "b", "c"]
    with pytest.raises(TypeError, match=r"defines it as a class attribute"):
        new(Vars, "v")(a=2)


# -- with portable bindings ------------------------------------------------------------


class _UserCodec:
    """Users travel as their name."""

    def encode(self, value: User) -> str:
        if not isinstance(value, User):
            raise TypeError(f"not a User: {value!r}")
        return value.name

    def decode(self, text: str) -> User:
        return User(text)


class Portable(xlocal):
    """A typed namespace whose declared type chooses the codec of ``user``."""

    user: Annotated[User, _UserCodec()]
    tenant: str = "public"
    local_only: object = None


def test_declared_type_chooses_the_codec() -> None:
    """A declared Annotated type gives the codec of its name; other names use the
    xlocal's codec, and defaults are not carried."""
    p = new(Portable, "tests.namespace.portable", portable={"user", "tenant"})
    with p(user=User("ann"), local_only=object()):
        carrier = inject()
    assert "local_only" not in carrier["xlocal"]
    assert "tenant" not in carrier["xlocal"]  # a default, not bound
    seen: list[Any] = []

    def receive() -> None:
        with extract(carrier):
            seen.append((p.user.name, p.tenant, p.local_only))

    contextvars.Context().run(receive)
    assert seen == [("ann", "public", None)]


def test_declared_codec_refuses_what_it_cannot_encode() -> None:
    """A value the declared codec refuses fails on the sender, naming the name."""
    p = new(Portable, "tests.namespace.refused", portable=True)
    with (
        p(user="not a user"),
        pytest.raises(  # type: ignore[arg-type]
            UnportableError, match=r"^cannot carry 'user' of <Portable "
        ),
    ):
        inject()
