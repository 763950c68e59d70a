r"""The membrane's scale: every spike unchanged, the surrogate gradient seen at another width.

A neuron's spikes depend on its membrane only through :math:`u - \theta`. Multiplying everything that drives
the membrane (the weights and biases feeding it, or the BatchNorm affine before it, and its recurrent weights)
and its threshold by the same factor :math:`c` therefore multiplies :math:`u` and :math:`\theta` by :math:`c`
and leaves every spike as it was, for any linear membrane (LIF, IF, snnTorch ``Leaky``/``Synaptic``/``RLeaky``,
SpikingJelly ``LIFNode``/``IFNode``/``ParametricLIFNode``; a soft reset or a hard reset to 0). The backward pass
changes: the surrogate derivative is evaluated at :math:`c(u - \theta)`, so

.. math::
    \frac{\partial L}{\partial u'} = h\big(c\,(u - \theta)\big)\,\frac{\partial L}{\partial s}, \qquad
    \frac{\partial L}{\partial s_{\mathrm{in}}} = c\,W^\top h\big(c\,(u - \theta)\big)\,\frac{\partial L}{\partial s}.

For a surrogate that is the derivative of a smoothed step of width :math:`1/\alpha` (ATan, sigmoid, and the
other normalised surrogates of both frameworks), :math:`c\,h_\alpha(c x) = h_{c\alpha}(x)`: scaling the membrane
by :math:`c` is the same as making the surrogate :math:`1/c` times wider relative to the threshold, with the
gradients reaching each spike identical to those of the network with surrogate :math:`h_{c\alpha}` and the
weight gradients :math:`1/c` times theirs. This is the lever on the backward pass an initialization has
without touching the user's surrogate object (SpikeInit, ICML 2026, sets the surrogate's shape for the same
reason). For a deep relay stack (``relay=``), a relayed spike leaves the membrane near the relay weight
:math:`g`, i.e. :math:`g - \theta` above threshold, where a narrow surrogate passes little gradient: the relay
path's backward gain per layer, :math:`g\,c\,h(c(g - \theta))`, is largest at :math:`c = 1/(\pi(g - \theta))`
for ATan(α = 2) (≈ 0.38 for g = 1.83, θ = 1). docs/depth.md measures what it buys in training.

:func:`scale_membrane` checks what it can before writing (a neuron with no weight before it, a hard reset to a
value other than 0, a neuron whose threshold cannot be set, BatchNorm without affine), writes, then runs the
example batch again and compares every neuron's spikes and the model's output with the pass before: a neuron
whose dynamics are not linear in the membrane (QIF, EIF, Izhikevich), or an output that reads a membrane
potential, changes them, and the model is put back and an :class:`~snn_initplug.errors.InitError` names it.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .adapters import neuron_spec, threshold_lever
from .distributed import is_distributed
from .errors import ArgumentTypeError, InitError, OptionError, PlanError
from .guard import entry_point
from .neuron import NeuronSpec
from .planning import LayerPlan, Plan, preserved
from .running import checked_calls, input_calls, neuron_groups, plan_for_input, recorded_passes, runner
from .selection import Skip, is_skipped, skip_list
from .state import all_tensors
from .tables import render_table, short_number
from .transaction import SameDraws, Snapshot, agree, all_finite, check_writable, fingerprint

__all__ = ["scale_membrane", "MembraneScaling", "NeuronScaling"]

# a spike flipped by rounding (a membrane within an ulp of θ) is tolerated at this rate per neuron layer
SPIKE_MISMATCH_TOLERANCE = 1e-3
OUTPUT_TOLERANCE = 1e-3  # relative L2 difference of the model's output
# A rounding flip (a factor that is not a power of 2 rounds c·W·x and c·θ differently) changes the spikes downstream
# of it in a deep stack and moves the output a little; an output that reads a membrane moves by about |c - 1|.
FLIPPED_OUTPUT_TOLERANCE = 0.05


def _output_tolerance(factor: float, flipped: bool) -> float:
    """How far the output may move: rounding only without a flipped spike; with one, the few percent its
    downstream changes make, but less than half of the |c - 1| a membrane read would show."""
    return min(FLIPPED_OUTPUT_TOLERANCE, 0.5 * abs(factor - 1)) if flipped else OUTPUT_TOLERANCE


@dataclass
class NeuronScaling:
    neuron: str
    parameters: list[str]  # the tensors multiplied by the factor (weights, biases, BatchNorm affine)
    threshold_before: float  # as the adapter reads it (the mean of a per-neuron threshold)
    threshold_after: float
    spike_mismatch: float  # fraction of this neuron's spike values that differ from before (rounding)
    status: str = "scaled"  # or "skipped"


@dataclass
class MembraneScaling:
    """What :func:`scale_membrane` did: per neuron, the tensors scaled, the threshold before and after and
    the fraction of spikes that differ from before (0 unless a membrane sat within rounding of θ)."""
    factor: float
    neurons: list[NeuronScaling]
    output_difference: float  # relative L2 difference of the model's output, before and after
    notes: list[str] = field(default_factory=list)

    @property
    def scaled(self) -> list[NeuronScaling]:
        return [n for n in self.neurons if n.status == "scaled"]

    def __str__(self) -> str:
        table = [["neuron", "status", "scaled", "threshold", "spikes changed"]]
        for n in self.neurons:
            threshold = f"{short_number(n.threshold_before)} -> {short_number(n.threshold_after)}"
            table.append([n.neuron, n.status, ", ".join(n.parameters), threshold, f"{n.spike_mismatch:.1e}"])
        lines = [f"membrane scaled by {self.factor:g} (every spike unchanged; output difference "
                 f"{self.output_difference:.1e})"] + render_table(table)
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def _threshold_value(spec: NeuronSpec) -> float:
    """The threshold as the neuron's adapter reads it (the mean of a per-neuron threshold)."""
    return float(torch.as_tensor(spec.threshold, dtype=torch.float64).mean())


def _neuron_skipped(name: str, layers: list[LayerPlan], skip: Skip) -> bool:
    patterns = [s for s in skip_list(skip) if isinstance(s, str)]
    return any(fnmatch.fnmatchcase(name, s) for s in patterns) or any(is_skipped(layer, skip) for layer in layers)


def _checked_factor(factor: Any) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise OptionError(f"scale_membrane: factor must be a positive number, got {type(factor).__name__}")
    if not (math.isfinite(factor) and factor > 0):
        raise OptionError(f"scale_membrane: factor must be a positive finite number, got {factor!r}")
    return float(factor)


@dataclass
class ScalingTarget:
    name: str
    module: nn.Module
    drives: list[tuple[str, torch.Tensor]]
    lever: Callable[[float], Callable[[], None]]


def scaling_targets(model: nn.Module, p: Plan, skip: Skip) -> tuple[list[ScalingTarget], list[str]]:
    """The neurons to scale (checked: each has a linear drive, a settable threshold, no hard reset to a value
    other than 0) and the names of those skipped."""
    groups = {g.neuron_name: g for g in neuron_groups(model, p, roles=("input", "recurrent"))}  # calibrate's drives
    targets, skipped = [], []
    for name, module, spec in p.neurons:
        group = groups.get(name)
        if _neuron_skipped(name, group.layers if group else [], skip):
            skipped.append(name)
            continue
        if group is None:
            raise InitError(f"scale_membrane: neuron {name} has no weight layer before it, so its input cannot be "
                            f"scaled with its threshold without changing its spikes; skip it (skip={name!r})")
        for layer, (label, _) in zip(group.layers, group.params):
            if layer.norm is not None and not label.startswith(f"{layer.norm}."):
                raise InitError(f"scale_membrane: {layer.norm} normalizes the input of {name} without an affine "
                                f"weight to scale; skip it (skip={name!r})")
        if spec.reset == "hard" and spec.reset_value != 0:
            raise InitError(f"scale_membrane: neuron {name} resets to {spec.reset_value:g}, a value that would have "
                            f"to be scaled too; skip it (skip={name!r})")
        lever = threshold_lever(module)
        if lever is None:
            raise InitError(f"scale_membrane: the threshold of neuron {name} ({type(module).__name__}) cannot be "
                            "set (register_neuron(scale_threshold=...)); skip it")
        drives = group.params + group.biases
        for label, tensor in drives:
            if not all_finite(tensor):
                raise InitError(f"scale_membrane: {label} has non-finite values; initialize it first")
            check_writable(f"scale_membrane: {label}", tensor)
        targets.append(ScalingTarget(name, module, drives, lever))
    if not targets:
        raise PlanError("scale_membrane: no neuron to scale (every neuron skipped, or no neuron found)")
    return targets, skipped


def drive_tensors(targets: list[ScalingTarget]) -> list[torch.Tensor]:
    """Every tensor driving a target's membrane, once (a layer feeding two neurons is scaled once)."""
    return list({id(tensor): tensor for target in targets for _, tensor in target.drives}.values())


def drive_fingerprint(targets: list[ScalingTarget], options: Any) -> int:
    """What every rank must agree on before writing: the targets, their drive tensors' shapes, the options."""
    return fingerprint([(t.name, [(n, tuple(x.shape)) for n, x in t.drives]) for t in targets], options)


def scale_drives(tensors: list[torch.Tensor], targets: list[ScalingTarget], factor: float, undo: list[Callable[[], None]]
           ) -> None:
    """Multiply the drive tensors and every target's threshold by ``factor``; each threshold's undo is appended
    to ``undo`` as soon as it is set, so a failure half-way can be put back (:func:`put_back`)."""
    with torch.no_grad():
        for tensor in tensors:
            tensor.mul_(factor)
    for target in targets:
        undo.append(target.lever(factor))


def _representable(tensors: list[torch.Tensor], targets: list[ScalingTarget], factor: float, entry: str) -> None:
    """Refuse, before anything is scaled, a factor whose products leave the drive tensors' dtype: a value that
    would overflow to ±inf, or a non-zero one that would underflow to 0 (the spikes would change for that
    reason, not because the dynamics are not linear)."""
    for target in targets:
        for (name, _), tensor in zip(target.drives, drive_tensors([target])):
            if tensor.numel() == 0 or not tensor.is_floating_point():
                continue
            info = torch.finfo(tensor.dtype)
            magnitudes = tensor.detach().abs().double()
            nonzero = magnitudes[magnitudes > 0]
            if nonzero.numel() and float(nonzero.max()) * factor > info.max:
                raise InitError(f"{entry}: factor {factor:g} overflows {tensor.dtype} in {name} (largest value "
                                f"{float(nonzero.max()):.3g}); the model is unchanged")
            if nonzero.numel() and float(nonzero.min()) * factor < info.tiny:
                raise InitError(f"{entry}: factor {factor:g} underflows {tensor.dtype} in {name} (smallest non-zero "
                                f"value {float(nonzero.min()):.3g}); the model is unchanged")


def put_back(undo: list[Callable[[], None]], saved: Snapshot) -> None:
    """Undo :func:`scale_drives`: the thresholds in reverse order, then the tensors from their snapshot."""
    for step in reversed(undo):
        step()
    saved.restore()


def _record(model: nn.Module, p: Plan, run: Callable[[], Any], draws: SameDraws
            ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Every neuron's outputs (flattened over its calls) and the model's output tensors, over one pass from
    rest with the draws of ``draws``; the model's state and the RNG are put back."""
    names = [name for name, _, _ in p.neurons]
    with recorded_passes(model, p, run, names) as (once, recorded), preserved(model):
        output = draws.run(once)
        spikes = {name: torch.cat([t.flatten() for t in recorded[name]]) if recorded[name] else torch.empty(0)
                  for name in names}
    return spikes, [t.detach().clone() for t in all_tensors(output) if t.is_floating_point()]


def _changed(before: torch.Tensor, after: torch.Tensor) -> float:
    """The fraction of spike values that differ (beyond float rounding: a straight-through spike ``1 + s - s``
    is 1 only to within an ulp, and s moves with the scale)."""
    if before.shape != after.shape:
        return 1.0
    if before.numel() == 0:
        return 0.0
    return float((~torch.isclose(after.double(), before.double(), rtol=1e-5, atol=1e-6)).double().mean())


def _difference(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    if len(before) != len(after) or any(a.shape != b.shape for a, b in zip(before, after)):
        return math.inf
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(before, after))
    den = sum(float(b.double().pow(2).sum()) for b in before)
    return 0.0 if num == 0 else math.sqrt(num / den) if den > 0 else math.inf


@entry_point("scale_membrane")
def scale_membrane(model: nn.Module, factor: float, example_input: Any, *, steps: Optional[int] = None,
                   forward: Optional[Callable[[nn.Module, Any], Any]] = None, skip: Skip = None, seed: int = 0,
                   process_group: Any = None) -> MembraneScaling:
    r"""Multiply every neuron's membrane and threshold by ``factor``: the same spikes, a ``1/factor`` times wider
    surrogate relative to θ (see the module's docstring for the gradients).

    In place: the weights and biases feeding each neuron (or the BatchNorm weight and bias before it, and its
    recurrent weights) and its threshold are multiplied by ``factor``. Then the example batch is run again and
    every neuron's spikes and the model's output are compared with the pass before; if any changed (beyond a
    spike flipped by rounding at :math:`u = \theta` in ``1e-3`` of a layer's values, and the few percent of the
    output such a flip moves downstream), everything is put back and an
    :class:`~snn_initplug.errors.InitError` names where (or names the rounding flip, when one spread through the
    layers after it beyond that share). A power-of-2 factor scales every value exactly: no flip at all.

    Args:
        model: the network, usually just initialized (``initialize``/``calibrate``: their rates are kept).
        factor: :math:`c > 0`; below 1 widens the surrogate relative to the membrane, above 1 narrows it.
        example_input, steps, forward: as in :func:`~snn_initplug.calibrate` (the batch the spikes are compared on).
        skip: neurons to leave alone (patterns on neuron or layer names, or predicates on a feeding layer); a
            neuron with no weight before it (an encoder reading the data) must be skipped.
        seed: the draws of a model that draws random numbers (dropout), the same in both passes.
        process_group: under ``torch.distributed``, every rank checks, then all write, and all restore if any
            rank's comparison fails.

    Returns:
        MembraneScaling: per neuron, the tensors scaled, the threshold before and after, the spikes changed.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(20, 30), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(30, 30), snn.Leaky(beta=0.9, init_hidden=True))
        >>> x = torch.rand(8, 20)
        >>> scaling = sip.scale_membrane(net, 0.5, x, steps=4)
        >>> [(n.neuron, n.threshold_after, n.spike_mismatch) for n in scaling.neurons]
        [('1', 0.5, 0.0), ('3', 0.5, 0.0)]
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"scale_membrane: model must be a torch.nn.Module, got {type(model).__name__}")
    try:  # a rank failing here still joins the agreement, so the others do not wait for it
        factor = _checked_factor(factor)
        if example_input is None:
            raise InitError("scale_membrane: needs a real batch (example_input) to trace the model and compare spikes")
        calls = checked_calls("scale_membrane", input_calls("scale_membrane", example_input, steps))
        p = plan_for_input(model, example_input, calls, forward)
        targets, skipped = scaling_targets(model, p, skip)
        run = runner(model, example_input, calls, steps, forward)
        draws = SameDraws(seed)
        before, out_before = _record(model, p, run, draws)
    except Exception as exc:
        agree("scale_membrane", 0, exc, process_group)
        raise
    tensors = drive_tensors(targets)
    error_early: Optional[Exception] = None
    try:
        _representable(tensors, targets, factor, "scale_membrane")
    except InitError as exc:
        error_early = exc
    agree("scale_membrane", drive_fingerprint(targets, factor), error_early, process_group)
    saved = Snapshot(tensors)
    undo: list[Callable[[], None]] = []
    error: Optional[Exception] = None
    try:
        scale_drives(tensors, targets, factor, undo)
        after, out_after = _record(model, p, run, draws)
        mismatch, output_difference = _compared(p, before, after, out_before, out_after, factor)
    except Exception as exc:
        error = exc
    except BaseException:  # an interrupt: put everything back before it propagates
        put_back(undo, saved)
        raise
    try:
        agree("scale_membrane", 0, error, process_group)
    except BaseException:
        put_back(undo, saved)
        raise
    return _scaling_record(p, targets, skipped, mismatch, factor, output_difference, process_group)


def _compared(p: Plan, before: dict, after: dict, out_before: list[torch.Tensor], out_after: list[torch.Tensor],
              factor: float) -> tuple[dict[str, float], float]:
    """Each neuron's share of changed spikes and the output's relative difference between the passes before and
    after the scaling; raises :class:`InitError` naming what changed beyond rounding."""
    mismatch = {name: _changed(before[name], after[name]) for name in before}
    output_difference = _difference(out_before, out_after)
    changed = [name for name, _, _ in p.neurons if mismatch[name] > SPIKE_MISMATCH_TOLERANCE]
    first = next((name for name, _, _ in p.neurons if mismatch[name] > 0), None)
    if changed and first is not None and first != changed[0]:  # a rounding flip upstream, spread downstream
        raise InitError(f"scale_membrane: spikes of {first} flipped by float rounding ({mismatch[first]:.1e} of "
                        f"its values: a membrane within rounding of θ, the factor {factor:g} not being a power "
                        f"of 2) and the change spread to {changed[0]} ({mismatch[changed[0]]:.1%} of its "
                        "values), beyond what the check accepts; a power-of-2 factor scales exactly; the model "
                        "is unchanged")
    if changed:
        raise InitError(f"scale_membrane: the spikes of {changed[0]} changed ({mismatch[changed[0]]:.1%} of its "
                        "values) when its membrane and threshold were scaled together: its dynamics are not linear "
                        "in the membrane, or its input has a path that was not scaled; skip it "
                        f"(skip={changed[0]!r}); the model is unchanged")
    flipped = any(mismatch.values())
    if output_difference > _output_tolerance(factor, flipped):
        raise InitError(f"scale_membrane: the model's output changed (relative difference {output_difference:.2g}) "
                        "although the spikes stayed: it reads a membrane potential (snnTorch's mem_rec?) that "
                        "the scaling changes; pass forward= returning what the loss uses if that is spikes only, "
                        "or skip the neuron whose membrane is read; the model is unchanged")
    return mismatch, output_difference


def _scaling_record(p: Plan, targets: list[ScalingTarget], skipped, mismatch: dict[str, float], factor: float,
                    output_difference: float, process_group: Any) -> MembraneScaling:
    """The record of a scaling that was kept: per neuron the tensors scaled, θ before and after, the spikes
    changed; notes on a factor of 1, rounding flips and the ranks."""
    records = []
    names = {t.name: t for t in targets}
    for name, module, spec in p.neurons:  # the plan's specs were read before the scaling
        if name in names:
            records.append(NeuronScaling(name, [n for n, _ in names[name].drives], _threshold_value(spec),
                                         _threshold_value(neuron_spec(module)), mismatch[name]))
        elif name in skipped:
            records.append(NeuronScaling(name, [], _threshold_value(spec), _threshold_value(spec), 0.0, "skipped"))
    notes = []
    if factor == 1.0:
        notes.append("factor 1: nothing changed")
    flips = [name for name, value in mismatch.items() if value]
    if flips:
        notes.append(f"{len(flips)} neuron layer(s) have spikes flipped by rounding (a membrane within float rounding "
                     f"of θ, first {flips[0]}); the output moved by {output_difference:.2g} (relative)")
    if is_distributed(process_group):
        notes.append("checked on every rank's batch; written on every rank")
    return MembraneScaling(factor, records, output_difference, notes)
