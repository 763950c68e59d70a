"""Model mode for single-step neurons in a custom time loop (one neuron call per step): one pass per neuron
layer records the neuron's calls, and its scale is searched by re-running the neuron alone over them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from ..errors import PlanError
from ..planning import StateSnapshot, first_tensor
from ..reports import LayerCalibration
from ..running import unit_output
from ..transaction import SameDraws
from .affine import affine_by_construction, affine_offset, affine_owners, same_values
from .search import SearchSettings, silent_cause
from .whole import calibrate_in_model


def calibrate_recorded(model, groups, run, settings: SearchSettings):
    """Model mode in one forward pass per neuron layer: in forward order, one pass records every call of the
    neuron (its input at each step, and the scaled module's output at that step); when each input is that
    output, the scale is searched by re-running only the neuron over the recorded steps, its state carried
    from call to call as the model carries it. Other neurons fall back to whole-model evaluations. Leaves the
    weights scaled; returns ``(records, [(parameter, scale)])``."""
    snapshot = StateSnapshot(model)
    owners = affine_owners(model, groups)
    results: list[LayerCalibration] = []
    scales: list[tuple[torch.Tensor, float]] = []
    for group in groups:
        snapshot.restore()
        found = _search_recorded_steps(group, owners.get(id(group)), run, settings)
        if found is None:
            found = calibrate_in_model(group, snapshot, run, settings)
        results.append(found[0])
        scales.extend((param, found[1]) for _, param in group.params)
    snapshot.restore()
    return results, scales


@dataclass
class _Call:
    """One call of the neuron: its arguments, the scaled module's last call before it, and what it returned."""

    args: tuple
    kwargs: dict
    owner_args: Optional[tuple]
    owner_out: Optional[torch.Tensor]
    outputs: tuple = ()


def _record_calls(group, owner, run) -> tuple[list[_Call], StateSnapshot]:
    """One pass recording every call of the group's neuron, with the scaled module's call before it; returns
    the calls and the neuron's state at its first call."""
    neuron = group.neuron
    calls: list[_Call] = []
    last: list[Optional[tuple[tuple, torch.Tensor]]] = [None]
    start: list[Optional[StateSnapshot]] = [None]

    def owner_hook(module, args, out):
        tensor = first_tensor(out)
        last[0] = (args, tensor) if tensor is not None else None

    def before(module, args, kwargs):
        if start[0] is None:
            start[0] = StateSnapshot(module)
        owner_args, owner_out = last[0] if last[0] is not None else (None, None)
        calls.append(_Call(args, dict(kwargs), owner_args, owner_out))

    def after(module, args, out):
        calls[-1].outputs = out if isinstance(out, tuple) else (out,)

    handles = [owner.register_forward_hook(owner_hook), neuron.register_forward_pre_hook(before, with_kwargs=True),
               neuron.register_forward_hook(after)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise PlanError(f"calibrate: neuron {group.neuron_name} was not called by the forward pass")
    state = start[0]
    assert state is not None  # taken at the first call, and there was one
    return calls, state


def _affine_inputs(calls: list[_Call], owner, param) -> Optional[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each call's input at scale s as ``s·direction + offset``: ``(direction, offset)`` per call, or None when
    an input is not the scaled module's output or that output is not affine in the scale."""
    if not all(c.args and isinstance(c.args[0], torch.Tensor) and c.owner_out is not None
               and same_values(c.args[0], c.owner_out) for c in calls):
        return None
    inputs = []
    plain = affine_by_construction(owner, param)  # our hooks are removed again
    for c in calls:  # input at scale s: s·direction + offset
        assert c.owner_args is not None and c.owner_out is not None
        offset = affine_offset(owner, param, c.owner_args, c.owner_out, plain)
        if offset is None:
            return None
        offset = offset.reshape(c.args[0].shape)
        inputs.append((c.args[0] - offset, offset))
    return inputs


def _search_recorded_steps(group, owner, run, settings: SearchSettings):
    """The search of ``group`` on its neuron's recorded calls (None when an input is not the scaled module's
    output, so the recorded inputs would not be affine in the scale)."""
    if owner is None:
        return None
    neuron, param = group.neuron, group.params[0][1]
    calls, state = _record_calls(group, owner, run)
    inputs = _affine_inputs(calls, owner, param)
    if inputs is None:
        return None
    # an argument that is an output of the previous call (snnTorch's mem, spk) is the state the loop carries
    carried = [{j: next((i for i, o in enumerate(prev.outputs) if o is arg), None)
                for j, arg in enumerate(c.args[1:], start=1)} if prev is not None else {}
               for prev, c in zip([None, *calls[:-1]], calls)]
    target = settings.target(group.neuron_name)
    draws = SameDraws(settings.seed)

    def rate_at(s: float) -> float:
        def once() -> list[torch.Tensor]:
            state.restore()
            spikes, previous = [], ()
            with torch.no_grad():
                for c, (direction, offset), carry in zip(calls, inputs, carried):
                    args = [s * direction + offset] + [
                        previous[carry[j]] if carry.get(j) is not None and previous else arg
                        for j, arg in enumerate(c.args[1:], start=1)]
                    out = neuron(*args, **c.kwargs)
                    previous = out if isinstance(out, tuple) else (out,)
                    spikes.append(unit_output(neuron, out))
            return spikes
        return settings.rate(lambda: draws.run(once))

    found = settings.scale(rate_at, target, partial(silent_cause, group))
    state.restore()
    with torch.no_grad():
        param.mul_(found.scale)
    return found.record_of(group, target), found.scale
