"""Node fingerprints: what identifies a node's definition across processes, for re-runs.

``fingerprint="auto"`` hashes, at ``build()``:

- the structure of the node's code: the abstract syntax tree of its source (so comments,
  docstrings, blank lines and formatting do not count, and neither does the bytecode, which
  changes with the Python version), walked field by field without line numbers;
- the values its closure captured and the plain-data globals it names (numbers, strings,
  bytes, None, and tuples of them: a ``PROMPT = "..."`` module constant counts);
- its configuration (kind, ``inline``, ``side_effects``, ``over``/``into`` of a map, the branch
  names of a parallel node);
- the helpers listed in ``deps=[...]`` (functions are fingerprinted the same way, other values by
  content).

Values are hashed in a canonical form: sets sorted, dicts sorted by key, functions by their
own fingerprint, classes and modules by name, and objects that have no plain-data form (a client,
a lock) by their type's qualified name only. Nothing depends on ``id()``, ``hash()`` or the
order of a set, so a fingerprint is the same in every process, whatever ``PYTHONHASHSEED``, and
on every platform running the same Python minor version.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

__all__ = ("FingerprintOption", "auto_fingerprint", "node_fingerprint", "value_form")

FingerprintOption = str | Callable[[], str] | None
"""``.node(..., fingerprint=...)``: ``"auto"``, a version string of your own, a callable
returning one (called once, at ``build()``), or None (no fingerprint: known by name only)."""

_DIGEST_CHARS = 20
"""Hex characters kept of the SHA-256 (80 bits): short in every step record, and collisions
between two versions of one node are out of reach."""


def node_fingerprint(
    option: FingerprintOption,
    fns: Sequence[Callable[..., Any]],
    *,
    config: dict[str, Any],
    deps: Sequence[Any],
    what: str,
) -> str | None:
    """The fingerprint of a node declared with ``fingerprint=option``; ValueError naming
    ``what`` when it cannot be computed."""
    if option is None:
        if deps:
            raise ValueError(f"{what}: deps= only counts with fingerprint='auto'")
        return None
    if isinstance(option, str):
        if option == "auto":
            return auto_fingerprint(fns, config=config, deps=deps, what=what)
        if not option:
            raise ValueError(f"{what}: fingerprint must be 'auto', a non-empty str or a callable")
        return option
    if callable(option):
        value = option()
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"{what}: the fingerprint callable returned {value!r}; it must return a "
                "non-empty str"
            )
        return value
    raise ValueError(
        f"{what}: fingerprint must be 'auto', a str, a callable or None, got {option!r}"
    )


def auto_fingerprint(
    fns: Sequence[Callable[..., Any]], *, config: dict[str, Any], deps: Sequence[Any], what: str
) -> str:
    """Hash code structure, closures, config and helpers (see the module docstring)."""
    import hashlib

    form = {
        "code": [_callable_form(fn, what, set()) for fn in fns],
        "config": value_form(config, set()),
        "deps": [value_form(d, set()) for d in deps],
    }
    data = msgspec.json.encode(form)
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


# -- values --------------------------------------------------------------------------------------


def value_form(value: Any, seen: set[int]) -> Any:
    """A canonical plain-data form of ``value`` (JSON-encodable, the same in every process)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, bytes | bytearray):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, enum.Enum):
        return ["enum", _qualname(type(value)), value_form(value.value, seen)]
    if isinstance(value, type):
        return ["type", _qualname(value)]
    if isinstance(value, types.ModuleType):
        return ["module", value.__name__]
    ident = id(value)
    if ident in seen:  # a cycle: name it, do not recurse
        return ["cycle", type(value).__qualname__]
    seen.add(ident)
    try:
        if isinstance(value, list | tuple):
            return [type(value).__name__, [value_form(v, seen) for v in value]]
        if isinstance(value, set | frozenset):
            items = [value_form(v, seen) for v in value]
            return ["set", sorted(items, key=msgspec.json.encode)]
        if isinstance(value, dict):
            pairs = [[value_form(k, seen), value_form(v, seen)] for k, v in value.items()]
            return ["dict", sorted(pairs, key=msgspec.json.encode)]
        if callable(value) and _has_code(value):
            return ["fn", _callable_form(value, None, seen)]
        if isinstance(value, msgspec.Struct):
            return ["struct", _qualname(type(value)), value_form(msgspec.to_builtins(value), seen)]
        # An object with no plain-data form (a client, a lock, a model handle): its type.
        return ["object", _qualname(type(value))]
    finally:
        seen.discard(ident)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _has_code(fn: Any) -> bool:
    return (
        isinstance(fn, functools.partial)
        or inspect.ismethod(fn)
        or hasattr(fn, "__code__")
        or (not isinstance(fn, type) and _own_call(fn))
    )


def _own_call(obj: Any) -> bool:
    """An instance of a user class with a ``__call__`` written in Python."""
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's __call__
    return call is not None and hasattr(call, "__code__")


# -- code ----------------------------------------------------------------------------------------


def _callable_form(fn: Any, what: str | None, seen: set[int]) -> Any:
    """The code structure of a callable, with its closure values and plain-data globals."""
    if isinstance(fn, functools.partial):
        return [
            "partial",
            _callable_form(fn.func, what, seen),
            [value_form(a, seen) for a in fn.args],
            value_form(dict(fn.keywords), seen),
        ]
    if inspect.ismethod(fn):
        # A bound method: its function, and the class of the object (not its state).
        return ["method", _qualname(type(fn.__self__)), _callable_form(fn.__func__, what, seen)]
    code = getattr(fn, "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - a callable object
        if call is not None and hasattr(call, "__code__"):
            return ["callable", _qualname(type(fn)), _callable_form(call, what, seen)]
        if what is None:
            return ["object", _qualname(fn)]
        raise ValueError(
            f"{what}: fingerprint='auto' needs Python source code, and {_qualname(fn)} has "
            "none; pass fingerprint='<version>' instead"
        )
    tree = _source_tree(fn, code)
    if tree is None:
        if what is None:
            return ["nosource", _qualname(fn)]
        raise ValueError(
            f"{what}: fingerprint='auto' cannot read the source of {_qualname(fn)} (defined "
            "in an interactive session or a file that is gone?); pass fingerprint='<version>'"
        )
    closure: list[Any] = []
    cells = getattr(fn, "__closure__", None) or ()
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
            content = ["empty"]
        closure.append([name, value_form(content, seen)])
    fn_globals = getattr(fn, "__globals__", {})
    constants = []
    for name in sorted(_global_names(code)):
        value = fn_globals.get(name, _MISSING)
        if value is not _MISSING and _plain(value):
            constants.append([name, value_form(value, seen)])
    defaults = getattr(fn, "__defaults__", None) or ()
    kwdefaults = getattr(fn, "__kwdefaults__", None) or {}
    return [
        "code",
        tree,
        closure,
        constants,
        [value_form(d, seen) for d in defaults],
        value_form(dict(kwdefaults), seen),
    ]


_MISSING = object()


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return False


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _source_tree(fn: Any, code: types.CodeType) -> Any:
    """The canonical form of the function's (or lambda's) syntax tree, or None."""
    import ast

    filename = code.co_filename
    module = _parsed(filename)
    if module is None:
        return None
    first = code.co_firstlineno
    found: list[ast.AST] = []
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            starts = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first in starts and node.name == code.co_name:
                found.append(node)
        elif isinstance(node, ast.Lambda) and code.co_name == "<lambda>" and node.lineno == first:
            found.append(node)
    if len(found) > 1 and code.co_name == "<lambda>":
        # Several lambdas on one line: keep those with the same parameters; if that does not
        # single one out, all of them count (an edit to any changes the fingerprint).
        params = list(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
        same = [n for n in found if _lambda_params(n) == params]
        found = same or found
    if not found:
        return None
    return [_tree_form(n) for n in found]


def _lambda_params(node: Any) -> list[str]:
    args = node.args
    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]


@functools.lru_cache(maxsize=64)
def _parsed_cached(filename: str, source: str) -> Any:
    import ast

    try:
        return ast.parse(source, filename=filename)
    except SyntaxError:
        return None


def _parsed(filename: str) -> Any:
    import linecache

    lines = linecache.getlines(filename)
    if not lines:
        return None
    return _parsed_cached(filename, "".join(lines))


def _tree_form(node: Any) -> Any:
    """A syntax tree as nested lists: node type and fields, no positions, no docstrings."""
    import ast

    if isinstance(node, ast.AST):
        out: list[Any] = [type(node).__name__]
        for field in node._fields:
            value = getattr(node, field, None)
            if field == "body" and isinstance(value, list):
                value = _without_docstring(node, value)
            if value is None or value == []:
                continue  # fields newer Pythons add as empty do not change the form
            out.append([field, _tree_form(value)])
        return out
    if isinstance(node, list):
        return [_tree_form(v) for v in node]
    return value_form(node, set())


def _without_docstring(node: Any, body: list[Any]) -> list[Any]:
    import ast

    if (
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
        and body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:] or [ast.Pass()]
    return body
