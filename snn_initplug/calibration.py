r"""Data-calibrated initialization: hold the firing rate at every depth, any T, any neuron.

Starting from the current (typically analytic) weights, each neuron layer is visited in forward order; on the
real batch and the real neuron dynamics over all time steps, one scale factor :math:`s` of the weight that
feeds it is searched until the measured firing rate (over batch, neurons and time) equals the target:

.. math::

    r(s) = \frac{1}{N T}\sum_{n,t} S_{n,t}\big(W \leftarrow sW\big) = r^\star .

Where BatchNorm sits between the layer and the neuron, the BatchNorm weight :math:`\gamma` is scaled instead
(the weight's scale is normalised away in training mode). :math:`r(s)` grows with :math:`s` for zero-mean
weights, so the search brackets the target by doubling or halving :math:`s` and then refines it by regula
falsi on :math:`\log s` (Illinois variant), stopping at ``|r/r* - 1| <= tolerance``.

Two execution modes:

* **chain** (a model built of ``nn.Sequential`` containers): each layer's input is cached, so a search step
  re-runs only that layer's neuron (for a bare Linear/Conv the pre-activation is affine in :math:`s` and is
  not even recomputed); the cost is a few passes of one layer per layer.
* **model** (anything else: custom time loops, residual networks): each search step runs the whole model;
  correct for any architecture, slower.

Under ``torch.distributed`` (``process_group=``) each rate is measured on the global batch: the spike and
element counts are all-reduced (SUM) over the ranks, so all ranks take the same search steps, and the weights
are broadcast from rank 0 before and after (see ``docs/distributed.md``).

Neuron states, BatchNorm statistics and the RNG are restored afterwards; only the weights change, and only
once every layer has been calibrated (an error leaves the model as it was).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from .adapters import is_neuron, is_time_major, threshold_lever
from .distributed import all_reduce_counts, broadcast_parameters, is_distributed, world_size
from .errors import ArgumentTypeError, DistributedError, InitError, PlanError, UnsupportedNeuronError
from .guard import entry_point
from .options import DEFAULT_TARGET_RATE, CalibrationOptions, TargetRate
from .planning import (
    NORM_LAYERS,
    WEIGHT_LAYERS,
    LayerPlan,
    Plan,
    StateSnapshot,
    first_tensor,
    plan,
    preserved,
    reset_neuron,
    run_model,
)
from .reports import CalibrationReport, LayerCalibration
from .selection import is_skipped
from .transaction import (
    SameDraws,
    Snapshot,
    agree,
    all_finite,
    check_writable,
    exclusive,
    fingerprint,
    seeded_evaluations,
)

__all__ = ["calibrate", "CalibrationReport", "LayerCalibration", "DEFAULT_TARGET_RATE"]

# ----------------------------------------------------------------------------------------------------------
# The scale search
# ----------------------------------------------------------------------------------------------------------
# A spike count that does not move over this many doublings in a row (a factor 2^6 = 64 in the weight) will not
# reach the target by scaling: stop there instead of spending every evaluation up to ×5e8.
_PLATEAU_STEPS = 6


_JUMP_WIDTH = 1e-3  # a bracket narrower than this in log-scale (×1.001) holds a jump of the rate, not a root


def _search(rate_at: Callable[[float], float], target: float, tolerance: float, max_evals: int,
            silent_cause: Union[str, Callable[[], str]] = "a silent input?", lever: str = "the weight scaled"):
    """Find s with |rate_at(s)/target - 1| <= tolerance; returns (s, rate, initial rate, evaluations, status).

    When the target cannot be bracketed, s is the best scale found (the rate nearest the target), not 1, and the
    status names the likely cause: ``silent_cause`` when no spike comes at any scale, saturation when the rate
    stops growing, an offset when the rate stays above the target however small the weight.
    """
    cache: dict[float, float] = {}

    def f(s: float) -> float:
        if s not in cache:
            cache[s] = rate_at(s)
        return cache[s]

    def good(r: float) -> bool:
        return abs(r / target - 1.0) <= tolerance

    def best() -> float:  # nearest the target; of equals, the scale nearest 1 (the least change)
        return min(cache, key=lambda k: (abs(cache[k] / target - 1.0), abs(math.log(k))))

    initial = f(1.0)
    if good(initial):
        return 1.0, initial, initial, len(cache), "ok"
    # bracket: rate grows with the scale
    step = 2.0 if initial < target else 0.5
    lo, hi = (1.0, None) if initial < target else (None, 1.0)
    s = 1.0
    unchanged = 0  # doublings (or halvings) in a row that left the spike count exactly as it was
    for _ in range(60):
        if len(cache) >= max_evals or unchanged >= _PLATEAU_STEPS:
            break
        previous = f(s)
        s *= step
        r = f(s)
        if good(r):
            return s, r, initial, len(cache), "ok"
        unchanged = unchanged + 1 if r == previous else 0
        if r < target:
            lo = s
        else:
            hi = s
        if lo is not None and hi is not None:
            break
    if hi is None or lo is None:
        k = best()
        if hi is None and f(s) == 0.0:
            cause = silent_cause() if callable(silent_cause) else silent_cause  # computed only when needed
        elif hi is None:
            cause = ("saturation: the rate stops growing with the scale (neurons with no input, "
                     "or a neuron that cannot fire faster)")
        else:
            cause = "driven by a bias or offset; try bias='zero'"
        where = "below" if hi is None else "above"
        return k, cache[k], initial, len(cache), (f"unreachable: the rate stays {where} the target (at {f(s):.3g} with "
                                                  f"{lever} ×{s:.3g}; kept ×{k:.3g}, rate {cache[k]:.3g}): "
                                                  f"{cause}")
    # regula falsi on log s (Illinois), rates bracketing the target
    a, b = math.log(lo), math.log(hi)
    fa, fb = f(lo) - target, f(hi) - target
    side = 0
    while len(cache) < max_evals:
        c = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if not (min(a, b) < c < max(a, b)):
            c = 0.5 * (a + b)
        r = f(math.exp(c))
        if good(r):
            return math.exp(c), r, initial, len(cache), "ok"
        fc = r - target
        if fc < 0:
            a, fa = c, fc
            if side == -1:
                fb *= 0.5
            side = -1
        else:
            b, fb = c, fc
            if side == 1:
                fa *= 0.5
            side = 1
        if abs(b - a) < _JUMP_WIDTH:  # the bracket is a point: the rate jumps across the target there
            break
    k = best()
    if abs(b - a) < _JUMP_WIDTH:
        def at(log_scale: float) -> float:  # the evaluated scale at that end of the bracket
            return cache[min(cache, key=lambda key: abs(math.log(key) - log_scale))]
        below, above = sorted((at(a), at(b)))
        return k, cache[k], initial, len(cache), (
            f"unreachable within the tolerance: the rate jumps from {below:.4g} to {above:.4g} within ×"
            f"{math.exp(abs(b - a)):.4f} of the scale (few neurons, a small batch, or an input taking few distinct "
            f"values); kept {lever} ×{k:.4g}, rate {cache[k]:.4g}")
    return k, cache[k], initial, len(cache), (f"tolerance not reached in {len(cache)} evaluations "
                                              f"(best rate {cache[k]:.4g}; the rate may jump in steps: "
                                              "few neurons or a small batch)")


def _silent_cause(group: _Group) -> str:
    """Why no scale makes this neuron fire: a weight that is all zero (BatchNorm γ = 0, as torchvision-style
    ``zero_init_residual=True`` sets it) stays zero when scaled; otherwise no spikes reach the layer."""
    zero = [name for name, param in group.params if not bool(param.detach().any())]
    if zero:
        return (f"{', '.join(zero)} is all zero (BatchNorm γ = 0, e.g. zero_init_residual=True), and a scaled "
                "zero stays zero")
    return "a silent input? (no spikes reach the layer at any scale)"


def _spike_rate(outputs: Sequence[torch.Tensor], group=None) -> float:
    """Spikes per neuron per step: (non-zero entries) / (entries), over batch, neurons and time.

    Under ``torch.distributed`` both integer counts are summed over ``group`` first, so the rate is that of the
    global batch, bit-identical on every rank (integer sums do not depend on order), and the search on every
    rank takes the same steps.
    """
    total = sum(int(torch.count_nonzero(o)) for o in outputs)
    count = sum(o.numel() for o in outputs)
    total, count = all_reduce_counts([total, count], group)
    return total / max(count, 1)


def _measured_rate(evaluate: Callable[[], Sequence[torch.Tensor]], group=None) -> float:
    """:func:`_spike_rate` of one search step's outputs. Under ``torch.distributed`` a rank whose evaluation
    raises still joins this step's agreement, so every rank stops at the same step with the same
    :class:`~snn_initplug.errors.DistributedError` (:func:`~snn_initplug.transaction.agree`) and restores its
    model, instead of the others waiting in the count's all-reduce until the group's timeout."""
    if not is_distributed(group):
        return _spike_rate(evaluate())
    try:
        outputs, error = evaluate(), None
    except Exception as exc:  # noqa: BLE001 - re-raised by agree, on this rank chained to the others' error
        outputs, error = [], exc
    agree("calibrate", 0, error, group)
    return _spike_rate(outputs, group)


# ----------------------------------------------------------------------------------------------------------
# What to scale for each neuron
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Group:
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


def _groups(model: nn.Module, p: Plan, skip=None, roles: tuple[str, ...] = ("input",)) -> list[_Group]:
    """Per neuron (in forward order), the tensors that scale its input (:func:`drive`) of its layers in
    ``roles`` that ``skip`` leaves."""
    modules = dict(model.named_modules())
    groups: dict[str, _Group] = {}
    for layer in p.layers:
        if layer.role not in roles or is_skipped(layer, skip):
            continue
        group = groups.setdefault(layer.neuron_name, _Group(layer.neuron_name, layer.neuron, [], [], []))
        group.layers.append(layer)
        weight, bias = drive(layer, modules)
        group.params.append(weight)
        if bias is not None:
            group.biases.append(bias)
    order = [name for name, _, _ in p.neurons]
    return sorted(groups.values(), key=lambda g: order.index(g.neuron_name))


def _target_for(name: str, target_rate: Union[float, dict[str, float], Callable[[str], float]]) -> float:
    if callable(target_rate):
        value = target_rate(name)
    elif isinstance(target_rate, dict):
        matches = [v for pattern, v in target_rate.items() if fnmatch.fnmatchcase(name, pattern)]
        value = matches[-1] if matches else target_rate.get("*", DEFAULT_TARGET_RATE)
    else:
        value = target_rate
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InitError(f"calibrate: the target rate of {name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < value < 1.0:
        raise InitError(f"calibrate: the target rate of {name} must lie in (0, 1), got {value}")
    return value


# ----------------------------------------------------------------------------------------------------------
# Chain mode: nn.Sequential stacks, with cached inputs
# ----------------------------------------------------------------------------------------------------------
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


def _chain_ready(model: nn.Module, groups: list[_Group]) -> Optional[list[tuple[str, nn.Module]]]:
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


def _output(unit: nn.Module, value: Any) -> torch.Tensor:
    """The tensor a unit of the chain returned (the first of a tuple): what the next unit is called on."""
    tensor = first_tensor(value)
    if tensor is None:
        raise PlanError(f"calibrate: {type(unit).__name__} returned no tensor, so the model cannot be calibrated "
                        "as a chain of units; pass mode='model'")
    return tensor


def _run_units(units: Sequence[nn.Module], calls: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for x in calls:
        for unit in units:
            x = _output(unit, unit(x))
        out.append(x)
    return out


def _calibrate_chain(model, units, groups, calls, target_rate, tolerance, max_evals, seed, process_group=None):
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
        result, scale, acts = _calibrate_segment(pending + [unit], group, acts, target_rate, tolerance, max_evals,
                                                 seed, process_group)
        results.append(result)
        scales.append(scale)
        pending = []
    return results, scales


def _calibrate_segment(segment, group, acts, target_rate, tolerance, max_evals, seed, process_group):
    """Calibrate the neuron that ends ``segment`` (the modules since the previous neuron) on its inputs
    ``acts``; return its record, ``(parameter, scale)``, and its spikes at that scale (the next input)."""
    unit = segment[-1]
    pname, param = group.params[0]
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

    draws = SameDraws(seed)

    def outputs_at(s: float) -> list[torch.Tensor]:
        def once() -> list[torch.Tensor]:
            snapshot.restore()
            with torch.no_grad():
                if affine is not None:
                    z = [s * d + _bias_like(affine, bias, d) if bias is not None else s * d for d in direction]
                else:
                    param.copy_(original * s)
                    try:
                        z = [_output(scaled, scaled(x)) for x in x_pre]
                    finally:
                        param.copy_(original)
                out = []
                for zz in z:
                    for module in post:
                        zz = _output(module, module(zz))
                    out.append(_output(unit, unit(zz)))
            return out
        return draws.run(once)

    target = _target_for(group.neuron_name, target_rate)

    def measured(v: float) -> float:  # the global batch's rate under torch.distributed
        return _measured_rate(lambda: outputs_at(v), process_group)

    s, rate, initial, evals, status = _search(measured, target, tolerance, max_evals, partial(_silent_cause, group))
    acts = outputs_at(s)
    snapshot.restore()
    return LayerCalibration(group.neuron_name, [pname], target, initial, rate, s, evals, status), (param, s), acts


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


# ----------------------------------------------------------------------------------------------------------
# Model mode: any architecture; a whole forward pass per evaluation where nothing cheaper is exact
# ----------------------------------------------------------------------------------------------------------
def _calibrate_model(model, groups, run, target_rate, tolerance, max_evals, seed, process_group=None):
    """Multi-step models: one paused pass; single-step loops: one recorded pass per neuron layer; a neuron
    whose input is not affine in its scale: whole-model (or up-to-the-neuron) evaluations."""
    if all(is_time_major(group.neuron) for group in groups):  # each neuron sees its whole [T, ...] input at once
        return _calibrate_paused(model, groups, run, target_rate, tolerance, max_evals, seed, process_group)
    return _calibrate_recorded(model, groups, run, target_rate, tolerance, max_evals, seed, process_group)


def _calibrate_in_model(group, snapshot, run, target_rate, tolerance, max_evals, seed, process_group,
                        stop_at_neuron: bool = False):
    """Search the scale of ``group``'s weights by running the model; leave them scaled (later layers are
    calibrated on top of this one) and return the record and the scale. ``stop_at_neuron``: each evaluation
    stops right after the neuron's (single) call, as the rest of the pass cannot change its rate (multi-step
    models)."""
    originals = [(param, param.detach().clone()) for _, param in group.params]
    recorded: list[torch.Tensor] = []

    def record(module, args, out):
        recorded.append(first_tensor(out).detach())
        if stop_at_neuron:
            raise _Reached

    handle = group.neuron.register_forward_hook(record)
    draws = SameDraws(seed)

    def rate_at(s: float) -> float:
        def once() -> None:
            recorded.clear()
            _scaled_pass(snapshot, originals, s, run)

        def evaluate() -> list[torch.Tensor]:
            draws.run(once)
            if not recorded:
                raise PlanError(f"calibrate: neuron {group.neuron_name} was not called by the forward pass")
            return recorded

        return _measured_rate(evaluate, process_group)

    target = _target_for(group.neuron_name, target_rate)
    try:
        s, rate, initial, evals, status = _search(rate_at, target, tolerance, max_evals, partial(_silent_cause, group))
    finally:
        handle.remove()
    _write_scaled(originals, s)
    return LayerCalibration(group.neuron_name, [n for n, _ in group.params], target, initial, rate, s, evals,
                            status), s


def _write_scaled(originals: list[tuple[torch.Tensor, torch.Tensor]], s: float) -> None:
    """Every parameter of ``originals`` set to its original value times ``s``."""
    with torch.no_grad():
        for param, value in originals:
            param.copy_(value * s)


def _scaled_pass(snapshot, originals: list[tuple[torch.Tensor, torch.Tensor]], s: float,
                 run: Callable[[], Any]) -> None:
    """One pass from the snapshot's state with the parameters of ``originals`` times ``s``, stopped where a hook
    raises :class:`_Reached`; the parameters are put back afterwards."""
    snapshot.restore()
    with torch.no_grad():
        _write_scaled(originals, s)
        try:
            run()
        except _Reached:
            pass
        finally:
            _write_scaled(originals, 1.0)


def _calibrate_on_stopped_input(group, snapshot, run, target_rate, tolerance, max_evals, seed, process_group
                                ) -> Optional[tuple[LayerCalibration, float]]:
    """A multi-step neuron whose input is not the scaled module's output (a max-pool after BatchNorm, an identity
    sum) but may still be affine in the scale: its input at scales 0, 1 and 2 from three passes stopped before
    it (not the paused pass's own input at 1, which carries the earlier searches' rounding: an identity path of
    spikes would then differ by whole spikes); if ``z(2) = 2·z(1) − z(0)`` on every rank, the scale is searched
    on the neuron alone (as in the paused pass) instead of by a pass per evaluation. Leaves the weights scaled;
    None when the input is not affine."""
    originals = [(param, param.detach().clone()) for _, param in group.params]
    seen: list[torch.Tensor] = []

    def stop(module, args):
        if args and isinstance(args[0], torch.Tensor):
            seen.append(args[0].detach().clone())
        raise _Reached

    draws = SameDraws(seed)

    def input_at(s: float) -> Optional[torch.Tensor]:
        def once() -> None:
            seen.clear()
            _scaled_pass(snapshot, originals, s, run)

        draws.run(once)
        return seen[0] if len(seen) == 1 else None

    handle = group.neuron.register_forward_pre_hook(stop)
    try:
        z0, z1, z2 = input_at(0.0), input_at(1.0), input_at(2.0)
    finally:
        handle.remove()
    affine = z0 is not None and z1 is not None and z2 is not None and _on_a_line(z0, z1, z2)
    if all_reduce_counts([int(not affine)], process_group)[0]:  # every rank takes the same path
        return None
    assert z0 is not None and z1 is not None
    snapshot.restore()  # the neuron as the pass reaches it (multi-step: one call, from rest)
    record, s, _ = _search_on_input(group, group.neuron, z1 - z0, z0, [False], target_rate, tolerance, max_evals,
                                    seed, process_group)
    _write_scaled(originals, s)
    return record, s


class _Reached(Exception):
    """Raised by a neuron's forward hook: the rest of the pass is not needed."""


# ----------------------------------------------------------------------------------------------------------
# Paused forward pass: multi-step models (every neuron gets its whole [T, ...] input in one call)
# ----------------------------------------------------------------------------------------------------------
class _Unpausable(Exception):
    """Raised inside a neuron's pre-hook to stop the pass at a neuron whose input is not affine in its scale."""

    def __init__(self, group: _Group):
        super().__init__(group.neuron_name)
        self.group = group


def _calibrate_paused(model, groups, run, target_rate, tolerance, max_evals, seed, process_group=None):
    """Model mode in about one forward pass: the pass pauses at each neuron in forward order, the scale is
    searched by re-running only that neuron on its recorded input (affine in the scale), the weight is scaled
    and the pass goes on with the calibrated input. A neuron whose input is not the scaled module's output
    (a residual sum, pooling between) stops the pass: it is calibrated in model mode, and a new pass resumes
    after it. Leaves the weights scaled, as model mode does; returns ``(records, [(parameter, scale)])``."""
    snapshot = StateSnapshot(model)
    owners = _affine_owners(model, groups)
    # decided before the pass installs its own hooks on these modules
    plain = {id(g) for g in groups if id(g) in owners and _affine_by_construction(owners[id(g)], g.params[0][1])}
    found: dict[int, tuple[LayerCalibration, float]] = {}
    search = (target_rate, tolerance, max_evals, seed, process_group)
    while len(found) < len(groups):
        snapshot.restore()
        pending = [g for g in groups if id(g) not in found]
        done, stopped = _paused_pass(pending, owners, plain, run, *search)
        found.update(done)
        if stopped is not None:
            found[id(stopped)] = (_calibrate_on_stopped_input(stopped, snapshot, run, *search)
                                  or _calibrate_in_model(stopped, snapshot, run, *search, stop_at_neuron=True))
        elif not done:
            raise PlanError(f"calibrate: neuron {pending[0].neuron_name} was not called by the forward pass")
    snapshot.restore()
    return ([found[id(g)][0] for g in groups],
            [(param, found[id(g)][1]) for g in groups for _, param in g.params])


def _affine_owners(model: nn.Module, groups: list[_Group]) -> dict[int, nn.Module]:
    """group id -> the module whose output is linear in the group's one scaled parameter, plus a constant:
    a Linear/Conv with its ``weight`` (bias = the constant) or a norm layer with its ``weight`` γ (β)."""
    by_param = {id(m.weight): m for m in model.modules()
                if isinstance(m, WEIGHT_LAYERS + NORM_LAYERS) and isinstance(getattr(m, "weight", None), torch.Tensor)}
    return {id(g): by_param[id(g.params[0][1])] for g in groups
            if len(g.params) == 1 and id(g.params[0][1]) in by_param}


def _paused_pass(pending, owners, plain, run, target_rate, tolerance, max_evals, seed, process_group):
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
            if recorded is None or not _same_values(z, recorded[1]):
                raise _Unpausable(group)
            offset = _affine_offset(owner, group.params[0][1], recorded[0], recorded[1], id(group) in plain)
            if offset is None:
                raise _Unpausable(group)
            offset = offset.reshape(z.shape)
            direction = z - offset
            record, s, z_s = _search_on_input(group, module, direction, offset, busy, target_rate, tolerance,
                                              max_evals, seed, process_group)
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


def _same_values(z: torch.Tensor, out: torch.Tensor) -> bool:
    """The neuron's input is the scaled module's output itself, or a reshape of it (SpikingJelly's
    [T·B, ...] <-> [T, B, ...] containers): nothing was added, pooled or multiplied in between."""
    return z is out or (z.numel() == out.numel() and z.dtype == out.dtype and torch.equal(z.reshape(-1), out.reshape(-1)))


def _scaled_output(module: nn.Module, param: torch.Tensor, args: tuple, scale: float) -> torch.Tensor:
    """The module's output with ``param`` times ``scale``, by ``functional_call`` on copies: neither the
    parameter nor BatchNorm's running statistics move."""
    name = next(n for n, p in module.named_parameters(recurse=False) if p is param)
    replaced = {n: b.detach().clone() for n, b in module.named_buffers(recurse=False)}
    replaced[name] = param.detach() * scale
    with torch.no_grad():
        return _output(module, torch.func.functional_call(module, replaced, args))


# forwards that are affine in the weight by construction (torch's own; a subclass that keeps them, such as
# SpikingJelly's layer.Linear, too)
_AFFINE_FORWARDS = frozenset({nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward})
_CONV_FORWARDS = frozenset({nn.Conv1d._conv_forward, nn.Conv2d._conv_forward, nn.Conv3d._conv_forward})


def _affine_by_construction(module: nn.Module, param: torch.Tensor) -> bool:
    """torch's own Linear/Conv forward on its own ``weight``, no hook and no parametrization on the module: the
    check at scale 2 could not fail, and on a 100 M-parameter classifier it costs more than the search."""
    cls = type(module)
    if cls.forward not in _AFFINE_FORWARDS or param is not getattr(module, "weight", None):
        return False
    if isinstance(module, nn.modules.conv._ConvNd) and getattr(cls, "_conv_forward", None) not in _CONV_FORWARDS:
        return False
    global_hooks = nn.modules.module
    return not (module._forward_hooks or module._forward_pre_hooks or global_hooks._global_forward_hooks
                or global_hooks._global_forward_pre_hooks or getattr(module, "parametrizations", None))


def _affine_offset(module: nn.Module, param: torch.Tensor, args: tuple, out: torch.Tensor,
                   by_construction: bool = False) -> Optional[torch.Tensor]:
    """The part of ``out`` that does not scale with ``param`` (a bias, BatchNorm's β: the output at weight 0),
    or None when the output is not affine in the scale (a subclass that clips its weight, a hook): checked at
    scale 2, where it must be 2·out − offset."""
    if by_construction:  # :func:`_affine_by_construction`, decided before any hook of ours was installed
        bias = getattr(module, "bias", None)  # the output at weight 0, without running a zero weight
        if bias is None:
            return torch.zeros((), dtype=out.dtype, device=out.device).expand_as(out)
        channels = bias.detach().view(-1, *([1] * (out.dim() - 2))) if isinstance(module, nn.modules.conv._ConvNd) \
            else bias.detach()
        return channels.to(out.dtype).expand_as(out)
    offset = _scaled_output(module, param, args, 0.0)
    if not _on_a_line(offset, out, _scaled_output(module, param, args, 2.0)):
        return None
    return offset


def _on_a_line(at0: torch.Tensor, at1: torch.Tensor, at2: torch.Tensor) -> bool:
    """The values at scales 0, 1 and 2 lie on a line, ``at2 = 2·at1 − at0``, up to float32 rounding."""
    expected = 2 * at1 - at0
    return at2.shape == expected.shape and torch.allclose(
        at2, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1.0)))


def _search_on_input(group, neuron, direction, offset, busy, target_rate, tolerance, max_evals, seed, process_group):
    """The scale search for ``group`` on its neuron alone: the input at scale s is ``s·direction + offset``;
    the neuron starts each run from the state it had when the pass reached it. Returns the record, the scale
    and the input at that scale."""
    state = StateSnapshot(neuron)
    target = _target_for(group.neuron_name, target_rate)
    draws = SameDraws(seed)

    def rate_at(s: float) -> float:
        def once() -> Optional[torch.Tensor]:
            state.restore()
            busy[0] = True
            try:
                with torch.no_grad():
                    return first_tensor(neuron(s * direction + offset))
            finally:
                busy[0] = False
        return _measured_rate(lambda: [draws.run(once)], process_group)

    s, rate, initial, evals, status = _search(rate_at, target, tolerance, max_evals, partial(_silent_cause, group))
    state.restore()
    record = LayerCalibration(group.neuron_name, [n for n, _ in group.params], target, initial, rate, s, evals, status)
    return record, s, s * direction + offset


# ----------------------------------------------------------------------------------------------------------
# Recorded steps: single-step models in custom time loops (one neuron call per step)
# ----------------------------------------------------------------------------------------------------------
def _calibrate_recorded(model, groups, run, target_rate, tolerance, max_evals, seed, process_group=None):
    """Model mode in one forward pass per neuron layer: in forward order, one pass records every call of the
    neuron (its input at each step, and the scaled module's output at that step); when each input is that
    output, the scale is searched by re-running only the neuron over the recorded steps, its state carried
    from call to call as the model carries it. Other neurons fall back to whole-model evaluations. Leaves the
    weights scaled; returns ``(records, [(parameter, scale)])``."""
    snapshot = StateSnapshot(model)
    owners = _affine_owners(model, groups)
    search = (target_rate, tolerance, max_evals, seed, process_group)
    results, scales = [], []
    for group in groups:
        snapshot.restore()
        found = _search_recorded_steps(group, owners.get(id(group)), run, *search)
        if found is None:
            found = _calibrate_in_model(group, snapshot, run, *search)
        results.append(found[0])
        scales.extend((param, found[1]) for _, param in group.params)
    snapshot.restore()
    return results, scales


@dataclass
class _Call:
    args: tuple
    kwargs: dict
    owner_args: Optional[tuple]
    owner_out: Optional[torch.Tensor]
    outputs: tuple = ()


def _search_recorded_steps(group, owner, run, target_rate, tolerance, max_evals, seed, process_group):
    """The search of ``group`` on its neuron's recorded calls (None when an input is not the scaled module's
    output, so the recorded inputs would not be affine in the scale)."""
    if owner is None:
        return None
    neuron, param = group.neuron, group.params[0][1]
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
    if not all(c.args and isinstance(c.args[0], torch.Tensor) and c.owner_out is not None
               and _same_values(c.args[0], c.owner_out) for c in calls):
        return None
    inputs = []
    plain = _affine_by_construction(owner, param)  # our hooks are removed again
    for c in calls:  # input at scale s: s·direction + offset
        assert c.owner_args is not None and c.owner_out is not None
        offset = _affine_offset(owner, param, c.owner_args, c.owner_out, plain)
        if offset is None:
            return None
        offset = offset.reshape(c.args[0].shape)
        inputs.append((c.args[0] - offset, offset))
    # an argument that is an output of the previous call (snnTorch's mem, spk) is the state the loop carries
    carried = [{j: next((i for i, o in enumerate(prev.outputs) if o is arg), None)
                for j, arg in enumerate(c.args[1:], start=1)} if prev is not None else {}
               for prev, c in zip([None, *calls[:-1]], calls)]
    target = _target_for(group.neuron_name, target_rate)
    draws = SameDraws(seed)
    state = start[0]
    assert state is not None  # taken at the first call, and there was one

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
                    spikes.append(_output(neuron, out))
            return spikes
        return _measured_rate(lambda: draws.run(once), process_group)

    s, rate, initial, evals, status = _search(rate_at, target, tolerance, max_evals, partial(_silent_cause, group))
    state.restore()
    with torch.no_grad():
        param.mul_(s)
    return LayerCalibration(group.neuron_name, [n for n, _ in group.params], target, initial, rate, s, evals,
                            status), s


# ----------------------------------------------------------------------------------------------------------
@entry_point("calibrate")
def calibrate(
    model: nn.Module,
    example_input: Any,
    target_rate: TargetRate = DEFAULT_TARGET_RATE,
    *,
    tolerance: float = 0.05,
    max_evaluations: int = 30,
    steps: Optional[int] = None,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
    bias: str = "keep",
    mode: str = "auto",
    seed: int = 0,
    weightless: str = "report",
    skip=None,
    plan_: Optional[Plan] = None,
    process_group: Any = None,
) -> CalibrationReport:
    """Scale the weight (or BatchNorm weight) that feeds each neuron until its firing rate equals the target.

    Args:
        model: the network, already initialized (e.g. by ``initialize(model, "spike_aware", ...)``).
        example_input: a real batch as the model takes it. For a model called once per time step (snnTorch
            ``nn.Sequential`` with ``init_hidden=True``), give ``steps=T``: the batch is presented at every step,
            or pass a list of T per-step tensors.
        target_rate: spikes per neuron per step: a number, ``{pattern: rate}`` on neuron names, or a callable.
        tolerance: relative tolerance on the rate (default ±5%).
        max_evaluations: evaluations of the rate per layer.
        forward: ``callable(model, example_input)`` for models that need more than ``model(example_input)``.
        bias: ``"keep"`` or ``"zero"`` (set the feeding layer's, or BatchNorm's, bias to 0 first, removing offsets
            that can make a low target unreachable).
        mode: ``"auto"`` (chain when the model is a plain ``nn.Sequential`` stack), ``"chain"`` or ``"model"``.
        seed: RNG seed used for every evaluation (dropout and stochastic encoders see the same draws each time).
        weightless: neurons that no weight feeds (Spikformer's attention LIF, fed by q·kᵀ·v of spikes):
            ``"report"`` (default) lists them as ``not calibrated`` with their rate; ``"threshold"`` brings each to
            its target by scaling its threshold θ (searched on whole-model passes with the calibrated weights, in
            forward order; the record's parameter is ``<neuron>.threshold`` and its scale the factor on θ). The
            threshold is then part of the model's state that calibrate changed; a neuron whose adapter cannot set
            it (``register_neuron(scale_threshold=...)``) stays ``not calibrated``.
        skip: layers to leave alone (patterns or predicates, as in ``initialize``).
        process_group: under an initialized ``torch.distributed`` group (None: the world group; False: no
            synchronisation), every rank calibrates on the global batch: the weights to scale are first
            broadcast from rank 0, each measured rate is (spikes summed over ranks) / (elements summed over
            ranks), so all ranks take the same search steps and find the same scales, and the final weights
            are broadcast from rank 0 again as a safety net. Each rank passes its own share of the batch.
            BatchNorm layers in training mode still normalise with per-rank batch statistics (use
            ``SyncBatchNorm``). A no-op outside ``torch.distributed``.

    The options are validated as a :class:`~snn_initplug.options.CalibrationOptions`.

    Returns:
        CalibrationReport: per neuron, the scaled weights, the target, the rate before and after, the scale and
        the ``status`` (``"ok"``, or why the target cannot be reached).

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(256, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> x = torch.rand(64, 784)
        >>> _ = sip.initialize(net, "spike_aware", x)
        >>> report = sip.calibrate(net, x, target_rate=0.1, steps=4)  # the batch presented at 4 steps
        >>> [(layer.status, round(layer.rate, 2)) for layer in report.layers]
        [('ok', 0.1), ('ok', 0.1)]
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"calibrate: model must be a torch.nn.Module, got {type(model).__name__}")
    try:  # a rank failing here still joins the first agreement, so the others do not wait for it
        options = CalibrationOptions(target_rate, tolerance, max_evaluations, steps, bias, mode, seed, weightless)
        if example_input is None:
            raise InitError("calibrate: needs a real batch (example_input)")
        calls = _checked_calls(_calls(example_input, options.steps))
        p = plan_ if plan_ is not None else plan(model, example_input if forward is not None else calls[0], forward=forward)
        groups = _checked_groups(model, p, skip, options.target_rate)
        chain_ok = forward is None and all(isinstance(c, torch.Tensor) for c in calls)  # a unit takes one tensor
        units = _chain_ready(model, groups) if options.mode in ("auto", "chain") and chain_ok else None
        if options.mode == "chain" and units is None:
            raise InitError("calibrate: mode='chain' needs a plain nn.Sequential stack with one layer per neuron")
        run = None if units is not None else _runner(model, example_input, calls, options.steps, forward)
        steps_seen: dict[str, int] = {}
        if run is not None:
            run = _counting_first_run(run, p.neurons, steps_seen)
    except Exception as exc:
        agree("calibrate", 0, exc, process_group)  # raises: this error alone, or DistributedError on every rank
        raise
    seeded_before = seeded_evaluations()
    with exclusive(model, "calibrate"):  # the search installs hooks and writes weights: one thread at a time
        whole_model = _runner(model, example_input, calls, options.steps, forward)
        results, chain_mismatch = _calibrate_atomically(model, p, groups, units, calls, run, options, process_group,
                                                        whole_model)
        if chain_mismatch:
            units = None  # recalibrated in model mode
        if p.weightless and options.weightless == "report":  # reported, not silently "ok": no weight was scaled
            results += _weightless_records(model, p, options.target_rate, whole_model, process_group)
    notes = list(chain_mismatch)
    if set(p.unfed) - set(p.weightless):  # weight-less neurons have their own records above
        notes += p.unfed_notes()
    if seeded_evaluations() > seeded_before:
        notes.append(f"the model draws random numbers from the process RNG (dropout, a stochastic encoder): every "
                     f"evaluation ran from seed={options.seed} inside torch.random.fork_rng, which restored the "
                     "RNG afterwards; torch has one CPU generator per process, so another thread drawing from it "
                     "during the calibration saw that stream")
    one_step = _one_step_warning(p, options.steps, example_input, units is not None, steps_seen)
    if one_step is not None:
        warnings.warn(one_step, UserWarning, stacklevel=3)
        notes.append(one_step)
    if is_distributed(process_group):
        notes.append(f"rates measured on the global batch of {world_size(process_group)} ranks; weights from rank 0")
    if not all(r.status == "ok" for r in results):
        notes.append("some layers did not reach their target; see status")
    return CalibrationReport(results, "chain" if units is not None else "model", options.tolerance, notes)


def _weightless_records(model: nn.Module, p: Plan, target_rate: TargetRate, run: Callable[[], Any],
                        process_group) -> list[LayerCalibration]:
    """One record per weight-less neuron (fed by other neurons' spikes combined without a weight, as
    Spikformer's attention LIF is by q·kᵀ·v): its rate with the calibrated weights, from one forward pass,
    and the status ``not calibrated`` with the reason."""
    names = list(p.weightless)
    rates = _rates_of(model, p, names, run, None, process_group)  # unseeded: the pass as the model runs it
    records = []
    for name in names:
        rate = rates[name]
        sources = ", ".join(p.weightless[name])
        records.append(LayerCalibration(
            name, [], _target_for(name, target_rate), rate, rate, 1.0, 0,
            f"not calibrated: no weight feeds it (its input is the spikes of {sources} combined without a weight); "
            "its rate follows theirs"))
    return records


def _checked_groups(model: nn.Module, p: Plan, skip, target_rate: TargetRate) -> list[_Group]:
    """The groups to scale, after checking every target and every weight before anything is touched."""
    groups = _groups(model, p, skip)
    for group in groups:
        _target_for(group.neuron_name, target_rate)
        for name, param in group.params:
            if not all_finite(param):  # a scale search on NaN weights would misreport the cause
                raise InitError(f"calibrate: {name} has non-finite values; initialize it first")
            check_writable(f"calibrate: {name}", param)
    if not groups:
        raise PlanError("calibrate: no weight layer feeds a neuron")
    return groups


def _calibrate_atomically(model, p: Plan, groups: list[_Group], units, calls, run, options: CalibrationOptions,
                          process_group, whole_model: Callable[[], Any]) -> tuple[list[LayerCalibration], list[str]]:
    """Search every group's scale (chain mode when ``units`` is given, else model mode with ``run``), then
    commit (:mod:`snn_initplug.transaction`): the model is put back as it was, the ranks agree, and the scaled
    weights (and zeroed biases) are written all or nothing. On any error the model is left unchanged.

    Chain mode's rates are checked by one real forward pass of the chain at the found scales; where they differ
    (the shortcut's assumption failed), the search is redone in model mode. Returns the records and, then, the
    note saying so (empty otherwise)."""
    fallback: list[str] = []
    targets = [param for g in groups for _, param in g.params + g.biases]
    scaled_params = [param for g in groups for _, param in g.params]
    originals = Snapshot(targets)
    # every rank must calibrate the same layers with the same options, or the summed rates would mix networks
    agree("calibrate", fingerprint([(n, tuple(t.shape), str(t.dtype)) for g in groups for n, t in g.params + g.biases],
                                   dataclasses.astuple(options), units is None), None, process_group)
    error: Optional[Exception] = None
    with preserved(model):
        try:
            # every rank starts from rank 0's weights
            broadcast_parameters(scaled_params, src=0, group=process_group)
            for _, neuron, _ in p.neurons:  # calibrate as a fresh batch is processed: from rest
                reset_neuron(neuron)
            if options.bias == "zero":
                with torch.no_grad():
                    for group in groups:
                        for _, b in group.biases:
                            b.zero_()
            search = (options.target_rate, options.tolerance, options.max_evaluations, options.seed, process_group)
            if units is not None:
                results, scales = _calibrate_chain(model, units, groups, calls, *search)
                with torch.no_grad():  # the chain search never wrote the weights: scale them for the check
                    for param, s in scales:
                        param.mul_(s)
                fallback = _chain_mismatch(p, groups, units, calls, results, options, process_group)
                if fallback:
                    originals.restore()
                    for _, neuron, _ in p.neurons:
                        reset_neuron(neuron)
                    if options.bias == "zero":
                        with torch.no_grad():
                            for group in groups:
                                for _, b in group.biases:
                                    b.zero_()
                    results, _ = _calibrate_model(model, groups, lambda: [model(x) for x in calls], *search)
            else:
                results, _ = _calibrate_model(model, groups, run, *search)  # model mode leaves them scaled
            thresholds: list[tuple[Callable[[float], Callable[[], None]], float]] = []
            if p.weightless and options.weightless == "threshold":  # with the calibrated weights in place
                results, thresholds = _with_thresholds(model, p, groups, whole_model, results, options, search,
                                                       process_group)
        except Exception as exc:
            error = exc
            originals.restore()
    if isinstance(error, DistributedError):  # every rank raised it together in the search: agreed already
        raise error
    # The weights already hold the calibrated values (the search wrote them in place): the commit keeps them
    # rather than restoring and copying them again, and restores them if any rank failed.
    undo: list[Callable[[], None]] = []
    try:
        agree("calibrate", 0, error, process_group)
        # the scales agree on every rank already (same global rates); this guards against anything rank-local
        broadcast_parameters(targets, src=0, group=process_group)
        for scale_threshold, factor in thresholds:
            undo.append(scale_threshold(factor))
    except BaseException:
        for step in reversed(undo):
            step()
        originals.restore()
        raise
    return results, fallback


_THRESHOLD_ROUNDS = 3


def _with_thresholds(model, p: Plan, groups: list[_Group], run: Callable[[], Any], first: list[LayerCalibration],
                     options: CalibrationOptions, search: tuple, process_group
                     ) -> tuple[list[LayerCalibration], list[tuple[Callable[[float], Callable[[], None]], float]]]:
    """``weightless="threshold"``: the weight-less neurons' thresholds, then the weights again, in rounds.

    A new threshold changes what the neurons after it receive, so the weights found before it no longer give
    their rates: each round searches the thresholds (with the weights in place), measures every neuron in one
    pass, and, where a rate left the tolerance, searches the weights again from where they are (then the
    thresholds), at most ``_THRESHOLD_ROUNDS`` times. The records carry the total factors and the rates of that
    last pass. Returns them and the ``(lever, factor)`` per threshold; the thresholds are back as they were."""
    records = {r.neuron: r for r in first}
    factors: dict[str, tuple[Callable[[float], Callable[[], None]], float]] = {}
    undo: list[Callable[[], None]] = []
    tolerance = options.tolerance
    try:
        for round_ in range(_THRESHOLD_ROUNDS):
            found, writes = _calibrate_thresholds(model, p, run, options, process_group)
            for record, (lever, factor) in zip([r for r in found if r.parameters], writes):
                undo.append(lever(factor))  # in place for the next rounds
                total = factors[record.neuron][1] * factor if record.neuron in factors else factor
                factors[record.neuron] = (lever, total)
            _merge(records, found)
            rates = _rates_of(model, p, [r.neuron for r in records.values()], run, options.seed, process_group)
            drifted = [name for name, r in records.items() if r.status == "ok"
                       and abs(rates[name] / r.target - 1.0) > tolerance]
            for name, rate in rates.items():
                records[name] = dataclasses.replace(records[name], rate=rate)
            if not drifted or round_ == _THRESHOLD_ROUNDS - 1:
                for name in drifted:
                    records[name] = dataclasses.replace(records[name], status=(
                        f"moved to {rates[name]:.4g} by the thresholds set before it ({_THRESHOLD_ROUNDS} rounds)"))
                break
            again, _ = _calibrate_model(model, groups, run, *search)  # from the weights in place
            _merge(records, again)
    finally:
        for step in reversed(undo):
            step()
    return list(records.values()), list(factors.values())


def _merge(records: dict[str, LayerCalibration], found: list[LayerCalibration]) -> None:
    """A later search's records into the first's: factors multiply, evaluations add, the first rate stays."""
    for r in found:
        old = records.get(r.neuron)
        records[r.neuron] = r if old is None else dataclasses.replace(
            r, initial_rate=old.initial_rate, scale=old.scale * r.scale, evaluations=old.evaluations + r.evaluations)


@contextlib.contextmanager
def _recorded_passes(model, p: Plan, run: Callable[[], Any], names: list[str]):
    """Hooks recording the outputs of the named neurons; yields ``(once, recorded)``: ``once()`` runs the whole
    model from rest (its states put back afterwards) and returns its output, and ``recorded`` then holds that
    pass alone. The process RNG
    is the caller's to handle (:class:`SameDraws` must see whether the model draws)."""
    modules = {name: module for name, module, _ in p.neurons}
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = [modules[name].register_forward_hook(
        lambda m, a, out, key=name: recorded[key].append(_output(m, out).detach())) for name in names]

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


def _rates_of(model, p: Plan, names: list[str], run: Callable[[], Any], seed: Optional[int], process_group
              ) -> dict[str, float]:
    """The rate of each named neuron over one whole-model pass from rest (with the draws of ``seed``, as the
    searches see them; None: the pass as it comes)."""
    with _recorded_passes(model, p, run, names) as (once, recorded):
        def evaluate() -> list[torch.Tensor]:
            if seed is None:
                with preserved(model):  # the RNG put back too
                    once()
            else:
                SameDraws(seed).run(once)
            return []

        _measured_rate(evaluate, process_group)  # the pass, with every rank agreeing it ran
    return {name: _spike_rate(recorded[name], process_group) for name in names}


def _search_threshold(model, p: Plan, name: str, lever: Callable[[float], Callable[[], None]], target: float,
                      run: Callable[[], Any], options: CalibrationOptions, process_group):
    """:func:`_search` for one weight-less neuron, each evaluation a whole-model pass with θ divided by s."""
    draws = SameDraws(options.seed)
    with _recorded_passes(model, p, run, [name]) as (once, recorded):
        def rate_at(s: float) -> float:
            def evaluate() -> list[torch.Tensor]:
                restore = lever(1.0 / s)
                try:
                    draws.run(once)
                finally:
                    restore()
                return list(recorded[name])

            return _measured_rate(evaluate, process_group)

        return _search(rate_at, target, options.tolerance, options.max_evaluations,
                       f"its input stays silent: the neurons feeding it ({', '.join(p.weightless[name])}) do not "
                       "fire", lever="the threshold divided by")


def _calibrate_thresholds(model, p: Plan, run: Callable[[], Any], options: CalibrationOptions, process_group
                          ) -> tuple[list[LayerCalibration], list[tuple[Callable[[float], Callable[[], None]], float]]]:
    r"""Bring each weight-less neuron to its target through its threshold: :math:`\theta \leftarrow \theta / s`,
    :math:`s` searched like a weight scale (the rate grows with it) on whole-model passes, in forward order, so a
    later neuron sees the earlier ones' new thresholds. Returns the records and the ``(lever, 1/s)`` to apply;
    every threshold is back as it was on return."""
    modules = {name: module for name, module, _ in p.neurons}
    records: list[LayerCalibration] = []
    writes: list[tuple[Callable[[float], Callable[[], None]], float]] = []
    undo: list[Callable[[], None]] = []
    try:
        for name in p.weightless:
            module, target = modules[name], _target_for(name, options.target_rate)
            lever = threshold_lever(module)
            if lever is None:
                records.append(LayerCalibration(
                    name, [], target, float("nan"), float("nan"), 1.0, 0,
                    f"not calibrated: no weight feeds it and its adapter cannot scale its threshold "
                    f"({type(module).__name__}; register_neuron(scale_threshold=...))"))
                continue
            s, rate, initial, evals, status = _search_threshold(model, p, name, lever, target, run, options,
                                                                process_group)
            undo.append(lever(1.0 / s))  # the neurons after it see its new threshold
            writes.append((lever, 1.0 / s))
            records.append(LayerCalibration(name, [f"{name}.threshold"], target, initial, rate, 1.0 / s, evals,
                                            status))
    finally:
        for step in reversed(undo):
            step()
    return records, writes


def _chain_mismatch(p: Plan, groups: list[_Group], units, calls, results: list[LayerCalibration],
                    options: CalibrationOptions, process_group) -> list[str]:
    """Run the chain once, as the model runs, with the scaled weights; a neuron whose real rate is outside the
    tolerance band around the rate the search reported means its shortcut did not hold: say which."""
    recorded: dict[str, list[torch.Tensor]] = {g.neuron_name: [] for g in groups}
    handles = [g.neuron.register_forward_hook(
        lambda m, a, out, key=g.neuron_name: recorded[key].append(_output(m, out).detach())) for g in groups]
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
        real = _spike_rate(recorded[record.neuron], process_group)
        if abs(real - record.rate) > options.tolerance * max(record.target, record.rate):
            wrong.append(f"{record.neuron} {real:.4g}, not {record.rate:.4g}")
    if not wrong:
        return []
    return [f"chain mode's rates differ from a real forward pass ({'; '.join(wrong)}): recalibrated in model mode"]


def _checked_calls(calls: list[Any]) -> list[Any]:
    """Refuse a batch that has no rate to measure: no step, no element, or non-finite values (the search would
    report every layer "unreachable" instead of naming the input)."""
    if not calls:
        raise InitError("calibrate: example_input is an empty list (give one input per time step)")
    tensors = [t for call in calls for t in (call if isinstance(call, (tuple, list)) else [call])
               if isinstance(t, torch.Tensor)]
    if any(t.numel() == 0 for t in tensors):
        raise InitError("calibrate: example_input has no elements (an empty batch has no firing rate)")
    if any(t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()) for t in tensors):
        raise InitError("calibrate: example_input has non-finite values (NaN/Inf)")
    return calls


def _calls(example_input: Any, steps: Optional[int]) -> list[Any]:
    if isinstance(example_input, list):
        return list(example_input)
    if steps is not None:
        return [example_input] * int(steps)
    return [example_input]


def _counting_first_run(run: Callable[[], Any], neurons, seen: dict[str, int]) -> Callable[[], Any]:
    """``run``, whose first call also counts how often each neuron is called in one forward pass (its steps)."""
    def counted() -> Any:
        if seen or not neurons:
            return run()
        handles = []
        for name, module, _ in neurons:
            seen[name] = 0
            handles.append(module.register_forward_hook(lambda m, a, o, key=name: seen.__setitem__(key, seen[key] + 1)))
        try:
            return run()
        finally:
            for handle in handles:
                handle.remove()
    return counted


def _one_step_warning(p: Plan, steps: Optional[int], example_input: Any, chain: bool,
                      seen: dict[str, int]) -> Optional[str]:
    """A warning when every neuron ran a single time step: single-step neurons (snnTorch, SpikingJelly
    ``step_mode='s'``) called once per forward pass and no ``steps=``, so only step 1 from rest was calibrated
    and the model fires differently over its real T steps."""
    if steps is not None or isinstance(example_input, list) or any(is_time_major(m) for _, m, _ in p.neurons):
        return None
    if not chain and (not seen or max(seen.values()) > 1):
        return None
    return ("calibrate: every neuron ran one time step (single-step neurons called once by the forward pass, and "
            "no steps=), so the rates are those of step 1 from rest; pass steps=T (the batch is presented at every "
            "step), a list of T per-step inputs, or forward= running the model's time loop")


def _runner(model, example_input, calls, steps, forward) -> Callable[[], Any]:
    if forward is None and (len(calls) > 1 or steps is not None):
        return lambda: [run_model(model, x) for x in calls]  # a tuple is the model's positional arguments
    return lambda: run_model(model, example_input, forward)
