"""Model mode for multi-step models (every neuron gets its whole ``[T, ...]`` input in one call): one forward
pass, paused at each neuron while its scale is searched on its recorded input.

A neuron fed the scaled module's output plus a term of the same shape (Spiking ResNet's identity sum, a
membrane shortcut) is searched on the assumption that the term does not move with the scale (it was computed
apart from that module): its input at scale s is ``z + (s - 1)·(the module's scaled part)``. One real pass at
the end checks every rate; where one differs, the layers from the first neuron so assumed are calibrated
again with passes stopped at each such neuron instead (:func:`~.whole.calibrate_on_stopped_input`)."""
from __future__ import annotations

from typing import Optional

import torch

from ..distributed import is_distributed
from ..errors import PlanError
from ..planning import StateSnapshot, first_tensor
from ..reports import LayerCalibration
from ..running import Group
from .affine import affine_by_construction, affine_offset, affine_owner_lists, same_values, scaled_output
from .search import SearchSettings, off_the_search, shortcut_failed
from .whole import calibrate_in_model, calibrate_on_stopped_input, real_rates, search_on_input


class _Unpausable(Exception):
    """Raised inside a neuron's pre-hook to stop the pass at a neuron whose input is not affine in its scale."""

    def __init__(self, group: Group):
        super().__init__(group.neuron_name)
        self.group = group


def calibrate_paused(model, groups, run, settings: SearchSettings):
    """Model mode in about one forward pass: the pass pauses at each neuron in forward order, the scale is
    searched by re-running only that neuron on its recorded input (affine in the scale), the weight is scaled
    and the pass goes on with the calibrated input. A neuron fed the scaled module's output plus a term is
    searched on the module docstring's assumption, checked by a real pass at the end. A neuron whose input is
    not affine in the scale that way (pooling between) stops the pass: it is calibrated in model mode, and a new
    pass resumes after it. Leaves the weights scaled, as model mode does; returns ``(records, [(parameter,
    scale)])``."""
    snapshot = StateSnapshot(model)
    owners = affine_owner_lists(model, groups)
    # decided before the pass installs its own hooks on these modules
    plain = {(id(o), id(p)) for parts in owners.values() for o, p in parts if affine_by_construction(o, p)}
    found: dict[int, tuple[LayerCalibration, float]] = {}
    assumed: list[int] = []  # groups searched on the assumption, in forward order
    originals: dict[int, torch.Tensor] = {}  # weights before the first assumption's pass scaled them
    # ranks could differ on which inputs look summed (a term that is zero on one rank's share): under
    # torch.distributed every neuron stops the pass as before, so all ranks take the same passes
    strict = is_distributed(settings.process_group)
    while True:
        _paused_passes(groups, owners, plain, snapshot, run, settings, found, assumed if not strict else None,
                       originals)
        if not assumed:
            break
        real = real_rates(groups, snapshot, run, settings)
        wrong = next((i for i, g in enumerate(groups) if (shortcut_failed if id(g) in assumed else off_the_search)(
            found[id(g)][0], real[i], settings.tolerance)), None)
        first = min(i for i, g in enumerate(groups) if id(g) in assumed)
        if wrong is None or wrong < first:  # a layer before any assumption: not the assumption's doing
            break
        with torch.no_grad():  # from the first assumption on, start again from the weights before it
            for group in groups[first:]:
                for _, param in group.params:
                    param.copy_(originals[id(param)])
                found.pop(id(group))
        assumed.clear()
        strict = True
    snapshot.restore()
    return ([found[id(g)][0] for g in groups],
            [(param, found[id(g)][1]) for g in groups for _, param in g.params])


def _paused_passes(groups, owners, plain, snapshot, run, settings: SearchSettings, found: dict,
                   assumed: Optional[list[int]], originals: dict[int, torch.Tensor]) -> None:
    """Paused passes until every group is in ``found``; ``assumed`` (None: no assumption made) collects the
    groups searched on an assumption (a summed input; a stopped neuron's input taken as on the line through its
    values at scales 0 and 1), and once one is, ``originals`` the weights of every group not yet calibrated."""
    while len(found) < len(groups):
        snapshot.restore()
        pending = [g for g in groups if id(g) not in found]
        done, stopped = _paused_pass(pending, owners, plain, run, settings, assumed, originals)
        found.update(done)
        if stopped is not None:
            if assumed is not None and not assumed:  # the line may be assumed: every weight from here on
                originals.update((id(p), p.detach().clone()) for g in groups if id(g) not in found
                                 for _, p in g.params)
            on_line = calibrate_on_stopped_input(stopped, snapshot, run, settings, checked=assumed is None)
            if on_line is not None and assumed is not None:
                assumed.append(id(stopped))
            found[id(stopped)] = on_line or calibrate_in_model(stopped, snapshot, run, settings, stop_at_neuron=True)
        elif not done:
            raise PlanError(f"calibrate: neuron {pending[0].neuron_name} was not called by the forward pass")


def _paused_pass(pending, owners, plain, run, settings: SearchSettings, assumed: Optional[list[int]],
                 originals: dict[int, torch.Tensor]):
    """One forward pass with every pending neuron calibrated where it is called; returns the records found
    and the group the pass stopped at (None when it ran to the end)."""
    outputs: dict[int, tuple[tuple, torch.Tensor, int]] = {}  # owner id -> its last call's inputs, output, version
    done: dict[int, tuple[LayerCalibration, float]] = {}
    busy = [False]  # the neuron's own re-runs during a search must not trigger its pre-hook again

    def record_output(module, args, out):
        tensor = first_tensor(out)
        if tensor is not None:
            outputs[id(module)] = (args, tensor, tensor._version)

    def pause(group):
        def hook(module, args):
            if busy[0] or id(group) in done or not args or not isinstance(args[0], torch.Tensor):
                return None
            z = args[0]
            parts = _scaled_parts(z, owners.get(id(group)), outputs, plain, assumed is not None)
            if parts is None:
                raise _Unpausable(group)
            exact, direction, offset = parts
            if not exact:
                if assumed is not None and not assumed:  # the first: every weight from here on may be undone
                    originals.update((id(p), p.detach().clone()) for g in pending if id(g) not in done
                                     for _, p in g.params)
                assumed.append(id(group))
            record, s, z_s = search_on_input(group, module, direction, offset, busy, settings)
            with torch.no_grad():
                for _, param in group.params:
                    param.mul_(s)
            done[id(group)] = (record, s)
            return (z_s if exact else _written(z, z_s),) + tuple(args[1:])
        return hook

    handles = [owner.register_forward_hook(record_output)
               for owner in {id(o): o for parts in owners.values() for o, _ in parts}.values()]
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


def _summed(z: torch.Tensor, out: torch.Tensor) -> bool:
    """The neuron's input may be the module's output plus a term: floating point, the same shape, or the same
    elements laid out the same way (the output's dimensions after the first end the input's: SpikingJelly's
    [T·B, ...] -> [T, B, ...]; not a transpose of them)."""
    if not (z.is_floating_point() and out.is_floating_point() and z.numel() == out.numel()):
        return False
    return z.shape == out.shape or (2 <= out.dim() <= z.dim() and z.shape[z.dim() - out.dim() + 1:] == out.shape[1:])


def _scaled_parts(z: torch.Tensor, parts, outputs: dict, plain: set, may_assume: bool
                  ) -> Optional[tuple[bool, torch.Tensor, torch.Tensor]]:
    """The neuron's input ``z`` as ``s·direction + offset``: ``(exact, direction, offset)``, exact when ``z`` is
    the one scaled module's output; else, when allowed, ``z`` taken as the scaled modules' outputs plus a term
    that does not move with s. None when neither applies."""
    if parts is None:
        return None
    calls: list[tuple[tuple, torch.Tensor]] = []
    for owner, param in parts:
        call = _owner_output(owner, param, outputs.get(id(owner)))
        if call is None:
            return None
        calls.append(call)
    exact = len(parts) == 1 and same_values(z, calls[0][1])
    if not (exact or (may_assume and all(_summed(z, out) for _, out in calls))):
        return None
    scaled: list[torch.Tensor] = []  # each module's part that moves with s
    for (owner, param), (args, out) in zip(parts, calls):
        offset = affine_offset(owner, param, args, out, (id(owner), id(param)) in plain)
        if offset is None:
            return None
        if exact:
            offset = offset.reshape(z.shape)
            return True, z - offset, offset
        scaled.append((out - offset).reshape(z.shape))
    direction = torch.stack(scaled).sum(0) if len(scaled) > 1 else scaled[0]
    return False, direction, z - direction  # everything else in z is taken not to move with s


def _owner_output(owner, param, recorded) -> Optional[tuple[tuple, torch.Tensor]]:
    """The scaled module's last call: its inputs and its output, computed again from those inputs when the model
    has changed the output in place since (Spiking ResNet's ``out += identity``)."""
    if recorded is None:
        return None
    args, out, version = recorded
    if out._version != version:
        out = scaled_output(owner, param, args, 1.0)
    return args, out


def _written(z: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
    """The calibrated input written into the model's own tensor when it can be: a membrane shortcut
    (``x = x + f(x); lif(x)``, x read again downstream) then carries the scaled term on, as the model would."""
    try:
        z.copy_(z_s)
    except RuntimeError:  # an expanded or otherwise unwritable tensor: the neuron alone gets the new values
        return z_s
    return z
