"""Model mode for single-step neurons in a custom time loop (one neuron call per step).

One pass records every call of the neuron layers still to calibrate (the neuron's input at each step, the
scaled module's call before it, what the neuron returned), the earliest first, within a memory budget. The
first layer's scale is searched by re-running its neuron alone over its recorded calls, its state carried from
call to call as the model carries it. A later layer whose scaled module was called on the previous layer's own
output at every step (a plain stack) is searched on the same recording: that module is re-run on the previous
layer's outputs at its found scale. A plain stack then costs one recorded pass (one per group of layers the
budget holds) instead of one per layer. A layer fed in any other way starts the next recording; a neuron whose
input is not affine in its scale falls back to whole-model evaluations.

The rates found on re-run modules are checked by one real pass of the model at the end; where a layer's real
rate differs from its search's, that layer and the ones after it are calibrated again, on a recorded pass
each (the recording is then that layer's real input).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn as nn

from ..distributed import all_reduce_counts
from ..errors import PlanError
from ..planning import StateSnapshot, first_tensor
from ..reports import LayerCalibration
from ..running import Group, unit_output
from ..transaction import SameDraws
from .affine import affine_by_construction, affine_offset, affine_owners, same_values
from .search import SearchSettings, shortcut_failed, silent_cause
from .whole import calibrate_in_model, real_rates

# Recorded calls kept by one pass (inputs and outputs of the neurons): a 1000-layer, width-128 stack at batch 64
# and T = 4 needs about 0.4 GiB; a deeper or wider one is recorded in groups of layers, a pass each.
_RECORDING_BYTES = 512 * 2**20


@dataclass
class _Call:
    """One call of the neuron: its arguments, the scaled module's last call before it, and what it returned."""

    args: tuple
    kwargs: dict
    owner_args: Optional[tuple]
    owner_kwargs: dict
    owner_out: Optional[torch.Tensor]
    outputs: tuple = ()


@dataclass
class _Recording:
    """One neuron layer's calls in a pass, the module its scaled parameter belongs to, its state at its first
    call, and the bytes its calls hold."""

    group: Group
    owner: nn.Module
    calls: list[_Call]
    state: StateSnapshot
    size: int = 0


def calibrate_recorded(model, groups, run, settings: SearchSettings):
    """Calibrate single-step neurons in forward order on recorded passes (module docstring); leaves the weights
    scaled; returns ``(records, [(parameter, scale)])``."""
    snapshot = StateSnapshot(model)
    owners = affine_owners(model, groups)
    found: dict[int, tuple[LayerCalibration, float]] = {}
    originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # weights before the shortcut scaled them
    first, budget = 0, _RECORDING_BYTES
    while True:
        shortcut, drew = _calibrate_from(groups[first:], owners, snapshot, run, settings, budget, found, originals)
        if not shortcut:
            break
        real = real_rates(groups, snapshot, run, settings, drew)
        wrong = next((i for i, g in enumerate(groups) if id(g) in shortcut
                      and shortcut_failed(found[id(g)][0], real[i], settings.tolerance)), None)
        if wrong is None:
            break
        with torch.no_grad():  # the layers from there start again from their weights before the shortcut
            for group in groups[wrong:]:
                for _, param in group.params:
                    if id(param) in originals:
                        param.copy_(originals[id(param)][1])
                found.pop(id(group), None)
        first, budget = wrong, 0  # one layer a pass: each searched on its real recorded input
    snapshot.restore()
    return ([found[id(g)][0] for g in groups],
            [(param, found[id(g)][1]) for g in groups for _, param in g.params])


def _calibrate_from(pending: list[Group], owners, snapshot, run, settings: SearchSettings, budget: int,
                    found: dict, originals: dict) -> tuple[set[int], bool]:
    """Calibrate ``pending`` in order, a recorded pass per group of layers (``budget`` bytes of calls; 0: one
    layer a pass); fills ``found`` and returns the ids of the groups searched on re-run modules, and whether a
    recorded pass drew from the process RNG."""
    shortcut: set[int] = set()
    any_drew = False
    while pending:
        snapshot.restore()
        recording, drew = _record(pending, owners, run, budget)
        any_drew = any_drew or drew
        done = _search_recording(pending, recording, settings, originals, shortcut, drew)
        if not done:
            snapshot.restore()
            for _, param in pending[0].params:
                originals.setdefault(id(param), (param, param.detach().clone()))
            record, scale = calibrate_in_model(pending[0], snapshot, run, settings)
            done = [(pending[0], record, scale)]
        for group, record, scale in done:
            found[id(group)] = (record, scale)
        pending = pending[len(done):]
    return shortcut, any_drew


def _record(pending: list[Group], owners, run, budget: int) -> tuple[dict[int, _Recording], bool]:
    """One pass recording the calls of the pending neurons that have an owner (the first always; the others
    while the calls held stay within ``budget`` bytes: the latest recorded are dropped first); and whether the
    pass drew from the process RNG."""
    wanted = {id(g.neuron): g for g in pending if id(g) in owners}
    if id(pending[0]) not in owners:
        return {}, True
    recording: dict[int, _Recording] = {}
    dropped: set[int] = set()
    last: dict[int, tuple[tuple, dict, Optional[torch.Tensor]]] = {}  # owner id -> its last call
    total = [0]

    def owner_hook(module, args, kwargs, out):
        last[id(module)] = (args, dict(kwargs), first_tensor(out))

    def before(module, args, kwargs):
        rec = recording.get(id(module))
        if rec is None:
            group = wanted[id(module)]
            if id(module) in dropped or (group is not pending[0] and total[0] > budget):
                return
            rec = recording[id(module)] = _Recording(group, owners[id(group)], [], StateSnapshot(module))
        owner_args, owner_kwargs, owner_out = last.get(id(rec.owner), (None, {}, None))
        rec.calls.append(_Call(args, dict(kwargs), owner_args, owner_kwargs, owner_out))

    def after(module, args, out):
        rec = recording.get(id(module))
        if rec is None:
            return
        rec.calls[-1].outputs = out if isinstance(out, tuple) else (out,)
        size = sum(t.numel() * t.element_size() for t in (*args[:1], *rec.calls[-1].outputs)
                   if isinstance(t, torch.Tensor))
        rec.size += size
        total[0] += size
        while total[0] > budget and len(recording) > 1:  # drop the latest layer recorded, never the first
            latest = next(reversed(recording))
            if recording[latest].group is pending[0]:
                break
            total[0] -= recording.pop(latest).size
            dropped.add(latest)

    handles = [o.register_forward_hook(owner_hook, with_kwargs=True) for o in {id(o): o for o in
                                                                              (owners[id(g)] for g in wanted.values())}.values()]
    for neuron in {id(g.neuron): g.neuron for g in wanted.values()}.values():
        handles += [neuron.register_forward_pre_hook(before, with_kwargs=True), neuron.register_forward_hook(after)]
    states = _rng_states()
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    if id(pending[0].neuron) not in recording:
        raise PlanError(f"calibrate: neuron {pending[0].neuron_name} was not called by the forward pass")
    return recording, not all(torch.equal(a, b) for a, b in zip(states, _rng_states()))


def _rng_states() -> list[torch.Tensor]:
    """The process RNG's states (CPU and every initialized CUDA device): a pass that leaves them as they were
    drew nothing from them (a draw by another thread meanwhile only makes the searches watch, as without this).
    Cheaper than watching every operation of the pass (:class:`~snn_initplug.transaction.ProcessDraws`), which
    costs more than the pass on small layers."""
    devices = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else ()
    return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in devices]


def _search_recording(pending: list[Group], recording: dict[int, _Recording], settings: SearchSettings,
                      originals: dict, shortcut: set[int], drew: bool
                      ) -> list[tuple[Group, LayerCalibration, float]]:
    """Search the pending groups in order on one recording while each can be (the first on its recorded calls,
    a later one on its scaled module re-run on the previous layer's outputs at the found scale); scale their
    weights; returns ``(group, record, scale)`` of the groups searched. ``drew``: whether the recorded pass
    drew from the process RNG (if not, no neuron's re-run is watched for draws again)."""
    done: list[tuple[Group, LayerCalibration, float]] = []
    fresh: dict[int, torch.Tensor] = {}  # id of a recorded output of the previous layer -> its value now
    for index, group in enumerate(pending):
        rec = recording.pop(id(group.neuron), None)
        calls = None if rec is None else rec.calls if index == 0 else _rerun_owner(rec, fresh)
        param = group.params[0][1]
        inputs = None if rec is None or calls is None else _affine_inputs(calls, rec.owner, param)
        if all_reduce_counts([int(inputs is None)], settings.process_group)[0]:  # every rank stops here
            break
        assert rec is not None and calls is not None and inputs is not None
        record, scale, outputs = _search_calls(group, rec, calls, inputs, settings, drew)
        fresh = {id(old): new for call, out in zip(rec.calls, outputs) for old, new in zip(call.outputs, out)}
        originals.setdefault(id(param), (param, param.detach().clone()))
        with torch.no_grad():
            param.mul_(scale)
        if index:
            shortcut.add(id(group))
        done.append((group, record, scale))
    return done


def _rerun_owner(rec: _Recording, fresh: dict[int, torch.Tensor]) -> Optional[list[_Call]]:
    """The neuron's calls with the scaled module re-run on the previous layer's outputs at its found scale, when
    at every call that module's only tensor argument was a recorded output of the previous layer and the neuron's
    input was that module's output; else None."""
    calls = []
    for c in rec.calls:
        if c.owner_args is None or c.owner_out is None or not c.args or not same_values(c.args[0], c.owner_out):
            return None
        head, rest = c.owner_args[0], c.owner_args[1:]
        if not isinstance(head, torch.Tensor) or id(head) not in fresh or any(
                isinstance(v, torch.Tensor) for v in (*rest, *c.owner_kwargs.values())):
            return None
        with torch.no_grad():
            out = first_tensor(rec.owner(fresh[id(head)], *rest, **c.owner_kwargs))
        if out is None or out.numel() != c.args[0].numel():
            return None
        new_args = (fresh[id(head)],) + tuple(rest)
        calls.append(_Call((out.reshape(c.args[0].shape),) + c.args[1:], c.kwargs, new_args, c.owner_kwargs, out,
                           c.outputs))
    return calls


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


def _search_calls(group: Group, rec: _Recording, calls: list[_Call], inputs, settings: SearchSettings, drew: bool):
    """The search of ``group`` on its neuron's calls, fed ``s·direction + offset``; returns the record, the
    scale and the neuron's outputs at each call at that scale."""
    neuron = group.neuron
    # an argument that is an output of the previous call (snnTorch's mem, spk) is the state the loop carries
    carried: list[dict[int, int]] = [
        {j: i for j, arg in enumerate(c.args[1:], start=1) for i, o in reversed(list(enumerate(prev.outputs))) if o is arg}
        if prev is not None else {} for prev, c in zip([None, *rec.calls[:-1]], rec.calls)]
    draws = SameDraws(settings.seed)
    if not drew:  # the recorded pass ran this neuron's calls without a draw: no evaluation needs watching
        draws.draws = False

    def outputs_at(s: float) -> list[tuple]:
        def once() -> list[tuple]:
            rec.state.restore()
            outputs: list[tuple] = []
            with torch.no_grad():
                for c, (direction, offset), carry in zip(calls, inputs, carried):
                    previous = outputs[-1] if outputs else ()
                    args = [s * direction + offset] + [
                        previous[carry[j]] if j in carry and previous else arg
                        for j, arg in enumerate(c.args[1:], start=1)]
                    out = neuron(*args, **c.kwargs)
                    outputs.append(out if isinstance(out, tuple) else (out,))
            return outputs
        return draws.run(once)

    seen: dict[float, list[tuple]] = {}  # the outputs at each scale evaluated: the found one feeds the next layer

    def rate_at(s: float) -> float:
        def spikes() -> list[torch.Tensor]:
            seen[s] = outputs_at(s)
            return [unit_output(neuron, out[0]) for out in seen[s]]
        return settings.rate(spikes)

    target = settings.target(group.neuron_name)
    found = settings.scale(rate_at, target, partial(silent_cause, group))
    outputs = seen.get(found.scale) or outputs_at(found.scale)
    rec.state.restore()
    return found.record_of(group, target), found.scale, outputs
