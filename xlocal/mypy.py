"""A mypy plugin that checks the bindings of typed namespaces.

Enable it in mypy's configuration::

    [mypy]
    plugins = xlocal.mypy

With it, mypy checks ``current(user=...)`` against the names a typed namespace declares
and their types, on every Python version mypy targets.  Without it, mypy checks them
only when it targets Python 3.13 or newer, where it gives dataclass-like classes the
``__replace__`` that the declarations of ``xlocal`` read the names from.  pyright needs
no plugin (and has none).  Reads are typed, and unknown names refused, either way.

This module imports mypy; the library itself never imports it.

.. versionadded:: 1.0
"""

from __future__ import annotations

from typing import Callable

from mypy.nodes import ARG_NAMED_OPT, Var
from mypy.plugin import AttributeContext, Plugin
from mypy.types import CallableType, Instance, Type, get_proper_type

__all__ = ["plugin"]

_XLOCAL = "xlocal._core.xlocal"


class _XlocalPlugin(Plugin):
    def get_attribute_hook(
        self, fullname: str
    ) -> Callable[[AttributeContext], Type] | None:
        if fullname == f"{_XLOCAL}.__call__":
            return _binding_signature
        return None


def _binding_signature(ctx: AttributeContext) -> Type:
    """``__call__`` of a typed namespace: its declared names, each optional."""
    instance = get_proper_type(ctx.type)
    default = get_proper_type(ctx.default_attr_type)
    if not isinstance(instance, Instance) or not isinstance(default, CallableType):
        return ctx.default_attr_type
    declared = _declared(instance)
    if not declared:
        return ctx.default_attr_type
    return default.copy_modified(
        arg_types=list(declared.values()),
        arg_kinds=[ARG_NAMED_OPT] * len(declared),
        arg_names=list(declared),
    )


def _declared(instance: Instance) -> dict[str, Type]:
    """The names *instance*'s class declares, with their types (base classes first)."""
    declared: dict[str, Type] = {}
    for info in reversed(instance.type.mro):
        if info.fullname == _XLOCAL or not info.has_base(_XLOCAL):
            continue
        for name, symbol in info.names.items():
            node = symbol.node
            if (
                isinstance(node, Var)
                and node.type is not None
                and not node.is_classvar
                and not node.is_property
                and name[:1] != "_"
            ):
                declared[name] = node.type
    return declared


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return _XlocalPlugin
