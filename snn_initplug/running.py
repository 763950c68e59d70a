"""Running a model on a batch, shared by ``calibrate``, ``scale_membrane``, ``balance_gradients``, ``initialize``
and ``diagnose``: the per-step calls of an example input, the runner that feeds them to the model, the plan
traced on that input, the tensors that scale each neuron's input, and whole-model passes from rest with the
named neurons' outputs recorded."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .errors import InitError, PlanError
from .options import check_steps
from .planning import NORM_LAYERS, LayerPlan, Plan, StateSnapshot, first_tensor, plan, reset_neuron, run_model
from .selection import is_skipped

__all__ = ["Group", "drive", "neuron_groups", "unit_output", "recorded_passes", "checked_calls", "input_calls",
           "runner", "stepped_forward", "plan_for_input", "mean_value"]


def mean_value(value: Any) -> float:
    """A number, or the mean of a tensor: per-neuron parameters enter the formulas through their mean."""
    return float(value.mean()) if isinstance(value, torch.Tensor) else float(value)


# ----------------------------------------------------------------------------------------------------------
# What to scale for each neuron
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One neuron and the tensors that scale its input: its weights (scaled together) and the biases beside them."""
    neuron_name: str
    neuron: nn.Module
    params: list[tuple[str, torch.Tensor]]  # scaled together
    layers: list[LayerPlan]
    biases: list[tuple[str, torch.Tensor]]


def drive(layer: LayerPlan, modules: dict[str, nn.Module]) -> tuple[tuple[str, torch.Tensor],
                                                                    Optional[tuple[str, torch.Tensor]]]:
    """What scales the layer's contribution to its neuron's input, and the bias beside it: the affine weight of
    the norm between them (scaling a weight before a normalization does nothing), else the layer's weight (an
    internal weight's bias is its own submodule's)."""
    norm = modules.get(layer.norm) if layer.norm is not None else None
    if isinstance(norm, NORM_LAYERS) and norm.weight is not None:
        return (f"{layer.norm}.weight", norm.weight), (None if norm.bias is None else (f"{layer.norm}.bias", norm.bias))
    owner_path = layer.parameter.rpartition(".")[0]
    owner = layer.module.get_submodule(owner_path) if owner_path else layer.module
    own_bias = getattr(owner, "bias", None)
    owner_name = layer.name.rpartition(".")[0]
    return (layer.name, layer.weight), ((f"{owner_name}.bias", own_bias) if isinstance(own_bias, torch.Tensor)
                                        else None)


def neuron_groups(model: nn.Module, p: Plan, skip=None, roles: tuple[str, ...] = ("input",)) -> list[Group]:
    """Per neuron (in forward order), the tensors that scale its input (:func:`drive`) of its layers in
    ``roles`` that ``skip`` leaves."""
    modules = dict(model.named_modules())
    groups: dict[str, Group] = {}
    for layer in p.layers:
        if layer.role not in roles or is_skipped(layer, skip):
            continue
        group = groups.setdefault(layer.neuron_name, Group(layer.neuron_name, layer.neuron, [], [], []))
        group.layers.append(layer)
        weight, bias = drive(layer, modules)
        group.params.append(weight)
        if bias is not None:
            group.biases.append(bias)
    order = [name for name, _, _ in p.neurons]
    return sorted(groups.values(), key=lambda g: order.index(g.neuron_name))


# ----------------------------------------------------------------------------------------------------------
# Inputs and passes
# ----------------------------------------------------------------------------------------------------------
def unit_output(unit: nn.Module, value: Any) -> torch.Tensor:
    """The tensor a unit of the chain returned (the first of a tuple): what the next unit is called on."""
    tensor = first_tensor(value)
    if tensor is None:
        raise PlanError(f"calibrate: {type(unit).__name__} returned no tensor, so the model cannot be calibrated "
                        "as a chain of units; pass mode='model'")
    return tensor


@contextlib.contextmanager
def recorded_passes(model, p: Plan, run: Callable[[], Any], names: list[str]):
    """Hooks recording the outputs of the named neurons; yields ``(once, recorded)``: ``once()`` runs the whole
    model from rest (its states put back afterwards) and returns its output, and ``recorded`` then holds that
    pass alone. The process RNG
    is the caller's to handle (:class:`~snn_initplug.transaction.SameDraws` must see whether the model draws)."""
    modules = {name: module for name, module, _ in p.neurons}
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = [modules[name].register_forward_hook(
        lambda m, a, out, key=name: recorded[key].append(unit_output(m, out).detach())) for name in names]

    def once() -> Any:
        for values in recorded.values():  # a pass SameDraws repeats (seeded) must not add to the undone one
            values.clear()
        state = StateSnapshot(model)  # taken now: a threshold the search just set is part of the state
        try:
            with torch.no_grad():
                for _, neuron, _ in p.neurons:
                    reset_neuron(neuron)
                return run()
        finally:
            state.restore()

    try:
        yield once, recorded
    finally:
        for handle in handles:
            handle.remove()


def checked_calls(entry: str, calls: list[Any]) -> list[Any]:
    """Refuse a batch that has no rate to measure: no step, no element, or non-finite values (the search would
    report every layer "unreachable" instead of naming the input)."""
    if not calls:
        raise InitError(f"{entry}: example_input is an empty list (give one input per time step)")
    tensors = [t for call in calls for t in (call if isinstance(call, (tuple, list)) else [call])
               if isinstance(t, torch.Tensor)]
    if any(t.numel() == 0 for t in tensors):
        raise InitError(f"{entry}: example_input has no elements (an empty batch has no firing rate)")
    if any(t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()) for t in tensors):
        raise InitError(f"{entry}: example_input has non-finite values (NaN/Inf)")
    return calls


def input_calls(entry: str, example_input: Any, steps: Any) -> list[Any]:
    """The input of each call of the model: a list as given, the batch ``steps`` times (``steps`` checked: an
    integer >= 1), or the batch once."""
    steps = check_steps(entry, steps)
    if isinstance(example_input, list):
        return list(example_input)
    if steps is not None:
        return [example_input] * steps
    return [example_input]


def runner(model, example_input, calls: Sequence[Any], steps, forward) -> Callable[[], Any]:
    """One forward pass: the model called on each of ``calls`` in turn, or once through ``forward``."""
    if forward is None and (len(calls) > 1 or steps is not None):
        return lambda: [run_model(model, x) for x in calls]  # a tuple is the model's positional arguments
    return lambda: run_model(model, example_input, forward)


def stepped_forward(calls: Sequence[Any]) -> Callable[[nn.Module, Any], Any]:
    """A ``forward=`` that calls the model once per step input and stacks the first tensor of each output
    over time (dimension 0, as both frameworks stack a multi-step output; the list of outputs when a step
    returned no tensor)."""
    def run(model: nn.Module, _: Any) -> Any:
        outputs = [run_model(model, x) for x in calls]
        tensors = [first_tensor(out) for out in outputs]
        return outputs if any(t is None for t in tensors) else torch.stack(tensors)  # type: ignore[arg-type]
    return run


def plan_for_input(model: nn.Module, example_input: Any, calls: Sequence[Any], forward) -> Plan:
    """The plan traced on one call of the model (the first step's input), or on the whole input through
    ``forward``."""
    return plan(model, example_input if forward is not None else calls[0], forward=forward)
