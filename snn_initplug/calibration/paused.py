"""Model mode for multi-step models (every neuron gets its whole ``[T, ...]`` input in one call): one forward
pass, paused at each neuron while its scale is searched on its recorded input."""
from __future__ import annotations

import torch

from ..errors import PlanError
from ..planning import StateSnapshot, first_tensor
from ..reports import LayerCalibration
from ..running import Group
from .affine import affine_by_construction, affine_offset, affine_owners, same_values
from .search import SearchSettings
from .whole import calibrate_in_model, calibrate_on_stopped_input, search_on_input


class _Unpausable(Exception):
    """Raised inside a neuron's pre-hook to stop the pass at a neuron whose input is not affine in its scale."""

    def __init__(self, group: Group):
        super().__init__(group.neuron_name)
        self.group = group


def calibrate_paused(model, groups, run, settings: SearchSettings):
    """Model mode in about one forward pass: the pass pauses at each neuron in forward order, the scale is
    searched by re-running only that neuron on its recorded input (affine in the scale), the weight is scaled
    and the pass goes on with the calibrated input. A neuron whose input is not the scaled module's output
    (a residual sum, pooling between) stops the pass: it is calibrated in model mode, and a new pass resumes
    after it. Leaves the weights scaled, as model mode does; returns ``(records, [(parameter, scale)])``."""
    snapshot = StateSnapshot(model)
    owners = affine_owners(model, groups)
    # decided before the pass installs its own hooks on these modules
    plain = {id(g) for g in groups if id(g) in owners and affine_by_construction(owners[id(g)], g.params[0][1])}
    found: dict[int, tuple[LayerCalibration, float]] = {}
    while len(found) < len(groups):
        snapshot.restore()
        pending = [g for g in groups if id(g) not in found]
        done, stopped = _paused_pass(pending, owners, plain, run, settings)
        found.update(done)
        if stopped is not None:
            found[id(stopped)] = (calibrate_on_stopped_input(stopped, snapshot, run, settings)
                                  or calibrate_in_model(stopped, snapshot, run, settings, stop_at_neuron=True))
        elif not done:
            raise PlanError(f"calibrate: neuron {pending[0].neuron_name} was not called by the forward pass")
    snapshot.restore()
    return ([found[id(g)][0] for g in groups],
            [(param, found[id(g)][1]) for g in groups for _, param in g.params])


def _paused_pass(pending, owners, plain, run, settings: SearchSettings):
    """One forward pass with every pending neuron calibrated where it is called; returns the records found
    and the group the pass stopped at (None when it ran to the end)."""
    outputs: dict[int, tuple[tuple, torch.Tensor]] = {}  # owner id -> (its last call's inputs, output)
    done: dict[int, tuple[LayerCalibration, float]] = {}
    busy = [False]  # the neuron's own re-runs during a search must not trigger its pre-hook again

    def record_output(module, args, out):
        tensor = first_tensor(out)
        if tensor is not None:
            outputs[id(module)] = (args, tensor)

    def pause(group):
        def hook(module, args):
            if busy[0] or id(group) in done or not args or not isinstance(args[0], torch.Tensor):
                return None
            owner = owners.get(id(group))
            recorded = outputs.get(id(owner)) if owner is not None else None
            z = args[0]
            if recorded is None or not same_values(z, recorded[1]):
                raise _Unpausable(group)
            offset = affine_offset(owner, group.params[0][1], recorded[0], recorded[1], id(group) in plain)
            if offset is None:
                raise _Unpausable(group)
            offset = offset.reshape(z.shape)
            direction = z - offset
            record, s, z_s = search_on_input(group, module, direction, offset, busy, settings)
            with torch.no_grad():
                group.params[0][1].mul_(s)
            done[id(group)] = (record, s)
            return (z_s,) + tuple(args[1:])
        return hook

    handles = [owner.register_forward_hook(record_output) for owner in {id(o): o for o in owners.values()}.values()]
    handles += [g.neuron.register_forward_pre_hook(pause(g)) for g in pending]
    stopped = None
    try:
        with torch.no_grad():  # run once: the RNG moves as in any forward pass; the searches below see same draws
            run()
    except _Unpausable as stop:
        stopped = stop.group
    finally:
        for handle in handles:
            handle.remove()
    return done, stopped
