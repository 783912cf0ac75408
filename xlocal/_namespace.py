"""What a subclass of xlocal declares: its names, their defaults, its own attributes.

A plain ``xlocal("x")`` is open: every name Python reads as an attribute and that does
not start with ``_`` can be bound.  A subclass that annotates names is a *typed
namespace*, closed to its declared names::

    class Current(xlocal):
        user: User                 # declared: bindable, unbound until bound
        tenant: str = "public"     # declared with a default, read when unbound

        def describe(self) -> str: # methods, properties and other class attributes
            ...                    # are the class's own: never bindable

This module reads such a class once, when it is made; the core builds each xlocal's
read and bind paths from what it finds, so that reads cost the same in both kinds.
"""

from __future__ import annotations

import inspect
import keyword
import re
import sys
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar, ForwardRef, get_origin

__all__ = [
    "OPEN",
    "Namespace",
    "annotation_text",
    "annotations_of",
    "describe_attribute",
    "invalid_name",
    "read_namespace",
]

#: An annotation that declares a class variable, not a name to bind, when the
#: annotation is a string (``from __future__ import annotations``).
_CLASSVAR = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?ClassVar\b")


class Namespace:
    """The names a class of xlocal objects declares, read once from the class.

    *declared* is None for an open class (every valid name can be bound), else the set
    of names that can be bound.  *defaults* maps declared names to the value read when
    they are unbound.  *own* holds the public names of the class's own attributes
    (methods, properties, class variables), which reads find on the class and which
    can never be bound.
    """

    __slots__ = ("declared", "defaults", "own")

    def __init__(
        self,
        declared: frozenset[str] | None,
        defaults: Mapping[str, Any],
        own: frozenset[str],
    ) -> None:
        self.declared = declared
        self.defaults = dict(defaults)
        self.own = own


#: The namespace of a plain xlocal: open, no defaults, no attributes of its own.
OPEN = Namespace(None, {}, frozenset())


def invalid_name(name: str, written: str) -> str | None:
    """Why *name* cannot be bound on any xlocal, or None if it can.

    *written* is how a read of it would be written, as ``xcurrent.name``.
    """
    if name[:1] == "_":
        return "names starting with '_' are reserved for the xlocal itself"
    if not name.isidentifier():
        return "names must be Python identifiers"
    if keyword.iskeyword(name):
        return (
            f"it is a Python keyword, so `{written}` cannot be written; choose another "
            f"name"
        )
    normal = unicodedata.normalize("NFKC", name)
    if normal != name:
        return (
            f"Python reads `{written}` as {normal!r} (NFKC normalisation); bind the "
            f"normalised name"
        )
    return None


def read_namespace(cls: type, base: type) -> Namespace:
    """Read what *cls*, a subclass of *base* (xlocal), declares.

    Raises TypeError for a declaration that cannot work: a declared name that is not a
    valid name to bind, or that is also a method, property or other class attribute.
    """
    classes = [
        c for c in reversed(cls.__mro__) if issubclass(c, base) and c is not base
    ]
    declared: set[str] = set()
    defaults: dict[str, Any] = {}
    for klass in classes:
        for name, annotation in annotations_of(klass).items():
            if name[:1] == "_" or _is_classvar(annotation):
                continue
            why = invalid_name(name, f"{cls.__name__}.{name}")
            if why is not None:
                raise TypeError(f"{cls.__name__} cannot declare {name!r}: {why}")
            declared.add(name)
            defaults.pop(name, None)  # (re)declared here: its default is this class's
        for name, value in klass.__dict__.items():
            if name in declared:
                defaults[name] = value
    for klass in classes:
        for name in declared.intersection(klass.__dict__):
            value = klass.__dict__[name]
            if hasattr(type(value), "__get__"):  # a method, property, descriptor
                raise TypeError(
                    f"{cls.__name__} declares {name!r} as a name to bind, and "
                    f"{klass.__name__} defines it as a "
                    f"{describe_attribute(value)}: rename one of them"
                )
    own = frozenset(
        name
        for name in dir(cls)
        if name[:1] != "_" and name not in declared and not hasattr(base, name)
    )
    return Namespace(frozenset(declared) if declared else None, defaults, own)


def describe_attribute(value: Any) -> str:
    """What a class attribute is, in words: ``method``, ``property``, ..."""
    if isinstance(value, property):
        return "property"
    if isinstance(value, classmethod):
        return "class method"
    if isinstance(value, staticmethod):
        return "static method"
    if inspect.isfunction(value):
        return "method"
    return "class attribute"


if sys.version_info >= (3, 14):  # pragma: no cover - coverage is measured on 3.11
    import annotationlib

    def annotations_of(klass: type) -> dict[str, Any]:
        """The annotations *klass* makes itself, evaluated as far as they can be.

        Python 3.14 defers a class's annotations (PEP 649/749): its ``__dict__``
        holds no ``__annotations__`` unless ``from __future__ import annotations``
        made them strings.  The forward-reference format evaluates them now, and a
        name not defined yet becomes a ``ForwardRef`` instead of an error.
        """
        return dict(
            annotationlib.get_annotations(klass, format=annotationlib.Format.FORWARDREF)
        )

elif sys.version_info >= (3, 10):

    def annotations_of(klass: type) -> dict[str, Any]:
        """The annotations *klass* makes itself, without evaluating them."""
        return dict(inspect.get_annotations(klass))

else:  # pragma: no cover - Python 3.9

    def annotations_of(klass: type) -> dict[str, Any]:
        return dict(klass.__dict__.get("__annotations__", {}))  # noqa: RUF063


def annotation_text(annotation: Any) -> str | None:
    """The source text of *annotation* if it was not evaluated: a string (``from
    __future__ import annotations``), or a forward reference (3.14+)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, ForwardRef):
        return annotation.__forward_arg__
    return None


def _is_classvar(annotation: Any) -> bool:
    text = annotation_text(annotation)
    if text is not None:
        return bool(_CLASSVAR.match(text))
    return annotation is ClassVar or get_origin(annotation) is ClassVar
