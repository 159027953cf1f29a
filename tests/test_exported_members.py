"""The public API surface: ``__all__`` of the package and of its public modules."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any

import pytest

import graphexec as gx
import graphexec.exceptions
import graphexec.reducers

ALL_MODULES = sorted(m.name for m in pkgutil.walk_packages(gx.__path__, "graphexec."))


def defined_in(module: types.ModuleType) -> set[str]:
    """Public classes and functions defined in ``module`` itself (not imported into it).

    Exported errors report ``__module__ == "graphexec"``, so they count where they are found.
    """
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ in (module.__name__, "graphexec")
    }


def test_all_is_a_tuple() -> None:
    """gx.__all__ is a tuple without duplicates."""
    assert isinstance(gx.__all__, tuple)
    assert len(gx.__all__) == len(set(gx.__all__))


@pytest.mark.parametrize("name", gx.__all__)
def test_every_name_exists(name: str) -> None:
    """Every name in gx.__all__ is an attribute of the package."""
    assert hasattr(gx, name)


PUBLIC_CLASSES = [n for n in gx.__all__ if inspect.isclass(getattr(gx, n))]


@pytest.mark.parametrize(
    "name", [n for n in PUBLIC_CLASSES if issubclass(getattr(gx, n), BaseException)]
)
def test_errors_live_in_graphexec(name: str) -> None:
    """Every exported error reports ``__module__ == "graphexec"`` (tracebacks say gx.X)."""
    assert "graphexec" == getattr(gx, name).__module__


@pytest.mark.parametrize(
    "name", [n for n in PUBLIC_CLASSES if not issubclass(getattr(gx, n), BaseException)]
)
def test_other_classes_keep_a_resolvable_module(name: str) -> None:
    """Structs and dataclasses keep their defining module, so their annotations resolve."""
    cls = getattr(gx, name)
    assert cls.__module__.startswith("graphexec")
    assert cls is getattr(importlib.import_module(cls.__module__), cls.__name__)
    typing.get_type_hints(cls)  # raises NameError if an annotation cannot be resolved


def test_nothing_public_is_missing() -> None:
    """Every public class or function of graphexec imported in __init__ is in __all__."""
    imported = {
        name
        for name, obj in vars(gx).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "").partition(".")[0] == "graphexec"
    }
    assert set() == imported - set(gx.__all__)


def test_public_submodules() -> None:
    """The submodules exported by name are modules of the package."""
    modules = {n for n in gx.__all__ if isinstance(getattr(gx, n), types.ModuleType)}
    assert "reducers" in modules
    for name in modules:
        assert f"graphexec.{name}" == getattr(gx, name).__name__


@pytest.mark.parametrize("module", [graphexec.reducers, graphexec.exceptions], ids=str)
def test_module_all_matches_module(module: types.ModuleType) -> None:
    """reducers.__all__ and exceptions.__all__ list exactly what those modules define."""
    assert isinstance(module.__all__, tuple)
    assert defined_in(module) == set(module.__all__)


def test_reducers_are_the_builtins() -> None:
    """gx.reducers exposes the built-ins and the registry of named custom reducers."""
    assert (
        "add",
        "append",
        "merge",
        "name_of",
        "named",
        "overwrite",
        "register",
        "registered",
        "union",
    ) == tuple(sorted(gx.reducers.__all__))


@pytest.mark.parametrize("name", graphexec.exceptions.__all__)
def test_exceptions_are_graph_errors(name: str) -> None:
    """Every exception subclasses gx.GraphError, except the GraphChangedWarning warning and
    the signals nodes raise to steer retries (NonRetryable, RetryAfter)."""
    exc: Any = getattr(graphexec.exceptions, name)
    if name == "GraphChangedWarning":
        assert issubclass(exc, UserWarning)
        assert not issubclass(exc, gx.GraphError)
    elif name in ("NonRetryable", "RetryAfter"):
        assert issubclass(exc, Exception)
        assert not issubclass(exc, gx.GraphError)
    else:
        assert issubclass(exc, gx.GraphError)


@pytest.mark.parametrize("name", graphexec.exceptions.__all__)
def test_exceptions_are_exported(name: str) -> None:
    """Every exception is also gx.<Name>, the same class."""
    assert getattr(graphexec.exceptions, name) is getattr(gx, name)
    assert name in gx.__all__


@pytest.mark.parametrize("name", ALL_MODULES)
def test_every_module_all_exists(name: str) -> None:
    """Every graphexec module's __all__ is a tuple of names the module has."""
    module = importlib.import_module(name)
    names = getattr(module, "__all__", ())
    assert isinstance(names, tuple)
    assert [] == [n for n in names if not hasattr(module, n)]
