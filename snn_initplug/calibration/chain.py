"""Chain mode: a model built of ``nn.Sequential`` containers, calibrated on cached inputs.

Each layer's input is cached, so a search step re-runs only that layer's neuron (for a bare Linear/Conv the
pre-activation is affine in :math:`s` and is not even recomputed); the cost is a few passes of one layer per
layer. The rates found are then checked by one real pass of the chain (:func:`chain_mismatch`).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Optional

import torch
import torch.nn as nn

from ..adapters import is_neuron
from ..errors import UnsupportedNeuronError
from ..options import CalibrationOptions
from ..planning import WEIGHT_LAYERS, Plan, StateSnapshot, reset_neuron
from ..reports import LayerCalibration
from ..running import Group, unit_output
from ..transaction import SameDraws
from .search import SearchSettings, off_the_search, silent_cause, spike_rate


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Plain ``nn.Sequential`` containers are transparent; anything else runs as one unit."""
    if type(module) is nn.Sequential:
        return [u for name, child in module.named_children() for u in _units(child, f"{prefix}.{name}" if prefix else name)]
    return [(prefix, module)]


def _owner_unit(units: list[tuple[str, nn.Module]], param: torch.Tensor) -> Optional[int]:
    for index, (_, unit) in enumerate(units):
        if any(p is param for p in unit.parameters()):
            return index
    return None


def _chain_obstacle(model: nn.Module) -> Optional[str]:
    """Why chain mode's shortcut (a layer's output at weight scale s is s·Wx + b) may not hold, read up front:
    a forward hook or pre-hook (it may change the output), a weight-layer subclass (its forward may not be
    linear in the weight). None when nothing is seen; the final rates are still checked by a real pass."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "a global forward hook is registered"
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return f"{name or 'the model'} has a forward hook"
        if isinstance(module, WEIGHT_LAYERS) and type(module) not in WEIGHT_LAYERS:
            return f"{name} is a {type(module).__name__}, a subclass of {type(module).__mro__[1].__name__}"
    return None


def chain_ready(model: nn.Module, groups: list[Group]) -> Optional[list[tuple[str, nn.Module]]]:
    """The units of the chain when chain mode applies: a plain ``nn.Sequential`` with nothing that may break its
    shortcut, each neuron a unit fed by one scaled weight after the previous neuron and no residual; else None."""
    if type(model) is not nn.Sequential or _chain_obstacle(model) is not None:
        return None
    units = _units(model)
    position = {id(u): i for i, (_, u) in enumerate(units)}
    previous = -1
    for group in groups:
        if id(group.neuron) not in position or len(group.params) != 1 or any(l.residual for l in group.layers):
            return None
        owner = _owner_unit(units, group.params[0][1])
        here = position[id(group.neuron)]
        if owner is None or not previous < owner <= here:
            return None
        previous = here
    return units


def _run_units(units: Sequence[nn.Module], calls: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for x in calls:
        for unit in units:
            x = unit_output(unit, unit(x))
        out.append(x)
    return out


def calibrate_chain(units, groups, calls, settings: SearchSettings):
    """Chain mode: each neuron's scale searched on its segment of the chain alone, from the cached outputs of
    the segment before it; returns the records and ``(parameter, scale)``, the weights left as they were."""
    results, scales = [], []
    by_neuron = {id(g.neuron): g for g in groups}
    acts = calls
    pending: list[nn.Module] = []
    for _name, unit in units:
        group = by_neuron.get(id(unit))
        if group is None:
            if _is_neuron_unit(unit):  # a neuron with no layer before it (an encoder): just run it
                acts = _run_units(pending + [unit], acts)
                pending = []
            else:
                pending.append(unit)
            continue
        result, scale, acts = _calibrate_segment(pending + [unit], group, acts, settings)
        results.append(result)
        scales.append(scale)
        pending = []
    return results, scales


def _calibrate_segment(segment, group, acts, settings: SearchSettings):
    """Calibrate the neuron that ends ``segment`` (the modules since the previous neuron) on its inputs
    ``acts``; return its record, ``(parameter, scale)``, and its spikes at that scale (the next input)."""
    unit = segment[-1]
    param = group.params[0][1]
    owner = next(i for i, u in enumerate(segment) if any(p is param for p in u.parameters()))
    pre, scaled, post = segment[:owner], segment[owner], segment[owner + 1:-1]
    with torch.no_grad():
        x_pre = _run_units(pre, acts)
    # a layer whose own weight is scaled is linear in it: its output at scale s is s·(Wx) + b
    affine = scaled if isinstance(scaled, WEIGHT_LAYERS) and scaled.weight is param else None
    snapshot = StateSnapshot(nn.ModuleList(segment))
    if affine is not None:
        with torch.no_grad():
            bias = affine.bias
            z1 = [affine(x) for x in x_pre]
            direction = [z - _bias_like(affine, bias, z) for z in z1] if bias is not None else z1
    original = param.detach().clone()

    draws = SameDraws(settings.seed)

    def outputs_at(s: float) -> list[torch.Tensor]:
        def once() -> list[torch.Tensor]:
            snapshot.restore()
            with torch.no_grad():
                if affine is not None:
                    z = [s * d + _bias_like(affine, bias, d) if bias is not None else s * d for d in direction]
                else:
                    param.copy_(original * s)
                    try:
                        z = [unit_output(scaled, scaled(x)) for x in x_pre]
                    finally:
                        param.copy_(original)
                out = []
                for zz in z:
                    for module in post:
                        zz = unit_output(module, module(zz))
                    out.append(unit_output(unit, unit(zz)))
            return out
        return draws.run(once)

    target = settings.target(group.neuron_name)

    def measured(v: float) -> float:  # the global batch's rate under torch.distributed
        return settings.rate(lambda: outputs_at(v))

    found = settings.scale(measured, target, partial(silent_cause, group))
    acts = outputs_at(found.scale)
    snapshot.restore()
    return found.record_of(group, target), (param, found.scale), acts


def _is_neuron_unit(unit: nn.Module) -> bool:
    try:
        return is_neuron(unit)
    except UnsupportedNeuronError:  # planning has already refused those; anything else is not a neuron here
        return False


def _bias_like(layer: nn.Module, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The layer's bias shaped to broadcast over its output: last dim for Linear, channel dim for Conv."""
    if isinstance(layer, nn.Linear):
        return bias
    return bias.reshape((-1,) + (1,) * (z.dim() - 2))


def chain_mismatch(p: Plan, groups: list[Group], units, calls, results: list[LayerCalibration],
                    options: CalibrationOptions, process_group) -> list[str]:
    """Run the chain once, as the model runs, with the scaled weights; a neuron whose real rate is outside the
    tolerance band around the rate the search reported means its shortcut did not hold: say which."""
    recorded: dict[str, list[torch.Tensor]] = {g.neuron_name: [] for g in groups}
    handles = [g.neuron.register_forward_hook(
        lambda m, a, out, key=g.neuron_name: recorded[key].append(unit_output(m, out).detach())) for g in groups]
    snapshot = StateSnapshot(nn.ModuleList([u for _, u in units]))
    try:
        def once() -> None:
            snapshot.restore()
            for value in recorded.values():
                value.clear()
            for _, neuron, _ in p.neurons:
                reset_neuron(neuron)
            with torch.no_grad():
                _run_units([u for _, u in units], list(calls))
        SameDraws(options.seed).run(once)
    finally:
        for handle in handles:
            handle.remove()
        snapshot.restore()
    wrong = []
    for record in results:
        real = spike_rate(recorded[record.neuron], process_group)
        if off_the_search(record, real, options.tolerance):
            wrong.append(f"{record.neuron} {real:.4g}, not {record.rate:.4g}")
    if not wrong:
        return []
    return [f"chain mode's rates differ from a real forward pass ({'; '.join(wrong)}): recalibrated in model mode"]
