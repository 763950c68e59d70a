"""Old names that keep working for one release, with a ``DeprecationWarning`` naming the new one.

One table per kind of name: :data:`RENAMED_OPTIONS` (options of the methods' records and of the functions
taking them as keywords) and :func:`renamed_arguments` (a function's keyword arguments). The package's
moved top-level names live in ``snn_initplug.__init__`` (its module ``__getattr__``).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar, cast

from .errors import OptionError

__all__ = ["RENAMED_OPTIONS", "renamed", "renamed_arguments", "warn_renamed"]

F = TypeVar("F", bound=Callable[..., Any])

# method -> {old option: new option}
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "ikun": {"mode": "fan_mode"},
    "spike_aware": {"rate": "target_rate", "horizon": "steps"},
    "fluctuation": {"rate": "target_rate", "horizon": "steps"},
}


def warn_renamed(owner: str, old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{owner}: {old}= is deprecated and will be removed in the next release; use {new}=",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed(owner: str, values: dict[str, Any], renames: dict[str, str], stacklevel: int = 4) -> dict[str, Any]:
    """``values`` with every old name replaced by its new one (warning once per old name); both given is an
    :class:`~snn_initplug.errors.OptionError`."""
    values = dict(values)
    for old, new in renames.items():
        if old in values:
            if new in values:
                raise OptionError(f"{owner}: give {new}= (the new name) or {old}= (deprecated), not both")
            warn_renamed(owner, old, new, stacklevel)
            values[new] = values.pop(old)
    return values


def renamed_arguments(**renames: str) -> Callable[[F], F]:
    """Decorate a function whose keyword arguments ``old=new`` were renamed: the old keyword still works, with a
    ``DeprecationWarning``."""
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def accepting_old_names(*args, **kwargs):
            return function(*args, **renamed(function.__name__, kwargs, renames, stacklevel=4))
        return cast(F, accepting_old_names)
    return decorate
