"""Model mode's evaluations that run the model: a whole (or stopped) forward pass per evaluation, for a neuron
whose input is not known to be affine in its scale; and the search on a neuron alone, fed ``s·direction +
offset``, once its input is known to be affine."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import torch

from ..distributed import all_reduce_counts
from ..errors import PlanError
from ..planning import StateSnapshot, first_tensor
from ..reports import LayerCalibration
from ..running import Group, unit_output
from ..transaction import SameDraws
from .affine import on_a_line
from .search import SearchSettings, silent_cause, spike_rate


class Reached(Exception):
    """Raised by a neuron's forward hook: the rest of the pass is not needed."""


def write_scaled(originals: list[tuple[torch.Tensor, torch.Tensor]], s: float) -> None:
    """Every parameter of ``originals`` set to its original value times ``s``."""
    with torch.no_grad():
        for param, value in originals:
            param.copy_(value * s)


def scaled_pass(snapshot, originals: list[tuple[torch.Tensor, torch.Tensor]], s: float,
                 run: Callable[[], Any]) -> None:
    """One pass from the snapshot's state with the parameters of ``originals`` times ``s``, stopped where a hook
    raises :class:`Reached`; the parameters are put back afterwards."""
    snapshot.restore()
    with torch.no_grad():
        write_scaled(originals, s)
        try:
            run()
        except Reached:
            pass
        finally:
            write_scaled(originals, 1.0)


def calibrate_in_model(group, snapshot, run, settings: SearchSettings, stop_at_neuron: bool = False):
    """Search the scale of ``group``'s weights by running the model; leave them scaled (later layers are
    calibrated on top of this one) and return the record and the scale. ``stop_at_neuron``: each evaluation
    stops right after the neuron's (single) call, as the rest of the pass cannot change its rate (multi-step
    models)."""
    originals = [(param, param.detach().clone()) for _, param in group.params]
    recorded: list[torch.Tensor] = []

    def record(module, args, out):
        recorded.append(first_tensor(out).detach())
        if stop_at_neuron:
            raise Reached

    handle = group.neuron.register_forward_hook(record)
    draws = SameDraws(settings.seed)

    def rate_at(s: float) -> float:
        def once() -> None:
            recorded.clear()
            scaled_pass(snapshot, originals, s, run)

        def evaluate() -> list[torch.Tensor]:
            draws.run(once)
            if not recorded:
                raise PlanError(f"calibrate: neuron {group.neuron_name} was not called by the forward pass")
            return recorded

        return settings.rate(evaluate)

    target = settings.target(group.neuron_name)
    try:
        found = settings.scale(rate_at, target, partial(silent_cause, group))
    finally:
        handle.remove()
    write_scaled(originals, found.scale)
    return found.record_of(group, target), found.scale


def search_on_input(group, neuron, direction, offset, busy, settings: SearchSettings):
    """The scale search for ``group`` on its neuron alone: the input at scale s is ``s·direction + offset``;
    the neuron starts each run from the state it had when the pass reached it. Returns the record, the scale
    and the input at that scale."""
    state = StateSnapshot(neuron)
    target = settings.target(group.neuron_name)
    draws = SameDraws(settings.seed)

    def rate_at(s: float) -> float:
        def once() -> Any:  # the neuron's spikes
            state.restore()
            busy[0] = True
            try:
                with torch.no_grad():
                    return first_tensor(neuron(s * direction + offset))
            finally:
                busy[0] = False
        return settings.rate(lambda: [draws.run(once)])

    found = settings.scale(rate_at, target, partial(silent_cause, group))
    state.restore()
    s = found.scale
    return found.record_of(group, target), s, s * direction + offset


def calibrate_on_stopped_input(group, snapshot, run, settings: SearchSettings,
                               checked: bool = True) -> Optional[tuple[LayerCalibration, float]]:
    """A multi-step neuron whose input is not the scaled module's output (a max-pool after BatchNorm, an identity
    sum) but may still be affine in the scale: its input at scales 0, 1 and 2 from three passes stopped before
    it (not the paused pass's own input at 1, which carries the earlier searches' rounding: an identity path of
    spikes would then differ by whole spikes); if ``z(2) = 2·z(1) − z(0)`` on every rank, the scale is searched
    on the neuron alone (as in the paused pass) instead of by a pass per evaluation. ``checked=False``: two
    passes, the line through scales 0 and 1 taken as the input (the caller checks the rates found by a real
    pass). Leaves the weights scaled; None when the input is not affine."""
    originals = [(param, param.detach().clone()) for _, param in group.params]
    seen: list[torch.Tensor] = []

    def stop(module, args):
        if args and isinstance(args[0], torch.Tensor):
            seen.append(args[0].detach().clone())
        raise Reached

    draws = SameDraws(settings.seed)

    def input_at(s: float) -> Optional[torch.Tensor]:
        def once() -> None:
            seen.clear()
            scaled_pass(snapshot, originals, s, run)

        draws.run(once)
        return seen[0] if len(seen) == 1 else None

    handle = group.neuron.register_forward_pre_hook(stop)
    try:
        z0, z1 = input_at(0.0), input_at(1.0)
        z2 = input_at(2.0) if checked else None
    finally:
        handle.remove()
    affine = z0 is not None and z1 is not None and (not checked or (z2 is not None and on_a_line(z0, z1, z2)))
    if all_reduce_counts([int(not affine)], settings.process_group)[0]:  # every rank takes the same path
        return None
    assert z0 is not None and z1 is not None
    snapshot.restore()  # the neuron as the pass reaches it (multi-step: one call, from rest)
    record, s, _ = search_on_input(group, group.neuron, z1 - z0, z0, [False], settings)
    write_scaled(originals, s)
    return record, s


def real_rates(groups: list[Group], snapshot: StateSnapshot, run, settings: SearchSettings,
               drew: bool = True) -> list[float]:
    """Every group's rate in one real pass of the model from rest, with the weights as they are now: the check
    of rates a search found on a shortcut (``drew=False``: the passes before it drew nothing from the process
    RNG, so this one is not watched for draws)."""
    recorded: dict[int, list[torch.Tensor]] = {id(g.neuron): [] for g in groups}

    def hook(module, args, out):
        recorded[id(module)].append(unit_output(module, out).detach())

    def once() -> None:
        for values in recorded.values():
            values.clear()
        snapshot.restore()
        with torch.no_grad():
            run()

    handles = [neuron.register_forward_hook(hook) for neuron in {id(g.neuron): g.neuron for g in groups}.values()]
    draws = SameDraws(settings.seed)
    if not drew:
        draws.draws = False
    try:
        draws.run(once)
    finally:
        for handle in handles:
            handle.remove()
        snapshot.restore()
    return [spike_rate(recorded[id(g.neuron)], settings.process_group) for g in groups]
