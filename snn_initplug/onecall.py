"""The one call: ``initialize(model, example_input)`` with the recipe of :mod:`snn_initplug.recipes`, and the
``membrane=`` scaling written with the init in one all-or-nothing step."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

from . import replay as checkpoint
from .adapters import threshold_lever
from .distributed import world_size
from .errors import InitError, OptionError
from .membrane import scale_membrane
from .planning import neuron_modules, plan
from .recipes import Recipe, choose
from .reports import Report
from .transaction import ModelState

__all__ = ["one_call", "checked_membrane", "recipe_for"]


def one_call(initialize_method: Callable[..., Report], model, method: str, example_input, generator, overrides,
             skip, forward, group, options: dict[str, Any], replay: Optional[Report]) -> Report:
    """``initialize_method`` (one method's init, its settings recorded) under the one call's recipe when
    ``method`` is ``"auto"``, followed by the membrane scaling when there is one: the init and the scaling
    are one write, all or nothing (the thresholds too, :class:`~snn_initplug.transaction.ModelState`)."""
    membrane = options.pop("membrane", None)
    if membrane is not None:
        membrane = checked_membrane(membrane)
    recipe: Optional[Recipe] = None
    if method == "auto":
        recipe = recipe_for(model, example_input, forward, options, membrane)
        membrane = recipe.membrane
        options = {**options, **recipe.options()}
    chosen = "calibrated" if recipe is not None else method
    dropped = ""
    steps = options.get("steps")
    if membrane is not None and chosen not in ("calibrated", "spike_aware", "fluctuation"):
        options = {key: value for key, value in options.items() if key != "steps"}  # the membrane check's only
    if membrane is None or membrane == 1.0:
        report = initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group, options,
                                    replay)
    else:  # the init, then the membrane: one write, all or nothing (the thresholds too)
        levers = [threshold_lever(module) for _, module in neuron_modules(model)]
        state = ModelState(model, [lever for lever in levers if lever is not None])
        refused: Optional[InitError] = None
        try:
            report = initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group,
                                        options, replay)
            try:
                scale_membrane(model, membrane, example_input, steps=steps, forward=forward, skip=skip,
                               process_group=group)
            except InitError as exc:
                if recipe is None or "membrane" not in recipe.chosen:
                    raise  # membrane= given by the caller: the whole call fails
                refused = exc
            report.membrane = membrane
        except BaseException:
            state.restore()
            raise
        if refused is not None and recipe is not None:
            # the recipe's membrane scaling does not apply to this model (its output reads a membrane, say):
            # the recipe without it, from the model as it was, said so
            state.restore()
            report = initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group,
                                        options, replay)
            report.notes.append(f"membrane ×{recipe.membrane:g} of the recipe not applied, the model is initialized "
                                f"without it: {refused}")
            dropped = f"; membrane ×{recipe.membrane:g} not applied (see the notes)"
            membrane = 1.0
            recipe = dataclasses.replace(recipe, membrane=1.0)
    if recipe is not None:  # replay re-plans and keeps every choice as recorded
        report.recipe = recipe.summary + dropped
        report.settings = checkpoint.settings("auto", {**options, "membrane": membrane}, overrides, skip,
                                              example_input, forward, world_size(group))
    elif membrane is not None:
        report.settings["options"]["membrane"] = membrane
    return report


def checked_membrane(membrane: Any) -> float:
    """``membrane=`` checked: a positive finite number."""
    if isinstance(membrane, bool) or not isinstance(membrane, (int, float)) or not (math.isfinite(membrane)
                                                                                    and membrane > 0):
        raise OptionError(f"initialize: membrane must be a positive finite number, got {membrane!r}")
    return float(membrane)


def recipe_for(model, example_input, forward, options: dict[str, Any], membrane: Optional[float]) -> Recipe:
    """The one call's recipe for this model (:func:`snn_initplug.recipes.choose`), read from its plan."""
    if example_input is None:
        raise InitError("initialize: the one call (method 'auto', the default) needs example_input= (a real "
                        "batch: it calibrates on it); without data, name a closed-form method such as 'ikun' or "
                        "'fluctuation'")
    first = example_input[0] if isinstance(example_input, list) and forward is None else example_input
    return choose(plan(model, first, forward=forward), relay=options.pop("relay", None), membrane=membrane,
                  weightless=options.pop("weightless", None))
