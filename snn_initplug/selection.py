"""Which planned layers an entry point touches, and with which options: ``skip=`` and ``overrides=``.

Patterns are ``fnmatch`` patterns matched against a layer's parameter name (``"fc1.weight"``), its module
name (``"fc1"``) and the name of the neuron it feeds; a ``skip`` entry may also be a predicate on the
:class:`~snn_initplug.planning.LayerPlan`.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from .errors import OptionError
from .planning import LayerPlan, Plan

__all__ = ["Skip", "matches", "skip_list", "is_skipped", "check_overrides", "layer_overrides"]

Skip = Union[None, str, Callable[[LayerPlan], bool], Sequence[Union[str, Callable[[LayerPlan], bool]]]]


def matches(layer: LayerPlan, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (layer.name, layer.module_name, layer.neuron_name))


def skip_list(skip: Skip) -> list[Any]:
    """``skip`` as a list of patterns and predicates; anything else is an :class:`OptionError` (a number or a
    list of numbers would otherwise fail deep inside, or match nothing and be ignored)."""
    if skip is None:
        return []
    entries = [skip] if isinstance(skip, str) or callable(skip) else skip
    if not isinstance(entries, (list, tuple, set, frozenset)) or \
            not all(isinstance(s, str) or callable(s) for s in entries):
        raise OptionError(f"skip must be a layer name pattern, a predicate on the LayerPlan, or a list of them; "
                          f"got {skip!r}")
    return list(entries)


def is_skipped(layer: LayerPlan, skip: Skip) -> bool:
    """``skip``: a pattern, a predicate on the :class:`LayerPlan`, or a sequence of them."""
    return any(s(layer) if callable(s) else matches(layer, s) for s in skip_list(skip))


def check_overrides(p: Plan, overrides: Optional[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``overrides`` as a dict of dicts, each pattern matching at least one planned layer."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise OptionError(f"initialize: overrides must be a dict {{pattern: {{option: value}}}}, got "
                          f"{type(overrides).__name__}")
    overrides = dict(overrides or {})
    for pattern, extra in overrides.items():
        if not isinstance(pattern, str):
            raise OptionError(f"initialize: overrides keys must be layer name patterns (str), got {pattern!r}")
        if not isinstance(extra, dict):
            raise OptionError(f"initialize: overrides[{pattern!r}] must be a dict of options, got "
                              f"{type(extra).__name__}")
        if not any(matches(layer, pattern) for layer in p.layers):
            raise OptionError(f"initialize: override pattern {pattern!r} matches no planned layer")
    return overrides


def layer_overrides(layer: LayerPlan, method: str, options: Mapping[str, Any],
                    overrides: Mapping[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The method and options of one layer: the call's, updated by every matching override in order; an
    override naming another ``method`` starts from no options (another method's options do not carry over)."""
    method, opts = method, dict(options)
    for pattern, extra in overrides.items():
        if matches(layer, pattern):
            extra = dict(extra)
            if "method" in extra:
                method = extra.pop("method")
                opts = {}
            opts.update(extra)
    return method, opts
