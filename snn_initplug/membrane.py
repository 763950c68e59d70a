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
from .distributed import all_reduce_sums, is_distributed
from .errors import ArgumentTypeError, InitError, OptionError, PlanError
from .guard import entry_point
from .neuron import NeuronSpec
from .planning import LayerPlan, Plan, all_tensors, preserved, reset_neuron
from .running import checked_calls, input_calls, neuron_groups, plan_for_input, recorded_passes, runner
from .selection import Skip, is_skipped, skip_list
from .tables import render_table, short_number
from .transaction import SameDraws, Snapshot, agree, all_finite, check_writable, fingerprint

__all__ = ["scale_membrane", "MembraneScaling", "NeuronScaling", "balance_gradients", "GradientBalance", "gradient_slope"]

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
class _Target:
    name: str
    module: nn.Module
    drives: list[tuple[str, torch.Tensor]]
    lever: Callable[[float], Callable[[], None]]


def _targets(model: nn.Module, p: Plan, skip: Skip) -> tuple[list[_Target], list[str]]:
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
        targets.append(_Target(name, module, drives, lever))
    if not targets:
        raise PlanError("scale_membrane: no neuron to scale (every neuron skipped, or no neuron found)")
    return targets, skipped


def _drive_tensors(targets: list[_Target]) -> list[torch.Tensor]:
    """Every tensor driving a target's membrane, once (a layer feeding two neurons is scaled once)."""
    return list({id(tensor): tensor for target in targets for _, tensor in target.drives}.values())


def _drive_fingerprint(targets: list[_Target], options: Any) -> int:
    """What every rank must agree on before writing: the targets, their drive tensors' shapes, the options."""
    return fingerprint([(t.name, [(n, tuple(x.shape)) for n, x in t.drives]) for t in targets], options)


def _scale(tensors: list[torch.Tensor], targets: list[_Target], factor: float, undo: list[Callable[[], None]]
           ) -> None:
    """Multiply the drive tensors and every target's threshold by ``factor``; each threshold's undo is appended
    to ``undo`` as soon as it is set, so a failure half-way can be put back (:func:`_put_back`)."""
    with torch.no_grad():
        for tensor in tensors:
            tensor.mul_(factor)
    for target in targets:
        undo.append(target.lever(factor))


def _representable(tensors: list[torch.Tensor], targets: list[_Target], factor: float, entry: str) -> None:
    """Refuse, before anything is scaled, a factor whose products leave the drive tensors' dtype: a value that
    would overflow to ±inf, or a non-zero one that would underflow to 0 (the spikes would change for that
    reason, not because the dynamics are not linear)."""
    for target in targets:
        for (name, _), tensor in zip(target.drives, _drive_tensors([target])):
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


def _put_back(undo: list[Callable[[], None]], saved: Snapshot) -> None:
    """Undo :func:`_scale`: the thresholds in reverse order, then the tensors from their snapshot."""
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
        calls = checked_calls(input_calls(example_input, steps))
        p = plan_for_input(model, example_input, calls, forward)
        targets, skipped = _targets(model, p, skip)
        run = runner(model, example_input, calls, steps, forward)
        draws = SameDraws(seed)
        before, out_before = _record(model, p, run, draws)
    except Exception as exc:
        agree("scale_membrane", 0, exc, process_group)
        raise
    tensors = _drive_tensors(targets)
    error_early: Optional[Exception] = None
    try:
        _representable(tensors, targets, factor, "scale_membrane")
    except InitError as exc:
        error_early = exc
    agree("scale_membrane", _drive_fingerprint(targets, factor), error_early, process_group)
    saved = Snapshot(tensors)
    undo: list[Callable[[], None]] = []
    error: Optional[Exception] = None
    try:
        _scale(tensors, targets, factor, undo)
        after, out_after = _record(model, p, run, draws)
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
    except Exception as exc:
        error = exc
    except BaseException:  # an interrupt: put everything back before it propagates
        _put_back(undo, saved)
        raise
    try:
        agree("scale_membrane", 0, error, process_group)
    except BaseException:
        _put_back(undo, saved)
        raise
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


# --------------------------------------------------------------------------------------------------------
# The factor that balances the backward pass
# --------------------------------------------------------------------------------------------------------
FLATNESS = 1.5  # stop when the fitted first-to-last gradient ratio exp(|b| (L - 1)) is within this factor
BALANCE_BOUNDS = (1 / 64, 64)
BALANCE_EVALUATIONS = 24


def gradient_slope(norms) -> float:
    r"""Least-squares slope :math:`b` of :math:`\log g_l = a + b\,l` over the layers :math:`l = 0 \dots L-1`.

    :math:`b > 0`: the gradient norms grow toward the output (they vanish toward the input), :math:`b < 0`: they
    explode toward the input; :math:`e^{b (L-1)}` is the fitted last-to-first ratio. A zero norm (underflow) and
    an infinite one (overflow) are clamped to :math:`10^{\mp 300}`, so the sign still says which way they went.

    Example:
        >>> round(gradient_slope([1.0, 10.0, 100.0]), 4)  # ln 10 per layer
        2.3026
    """
    logs = [math.log(min(max(float(g), 1e-300), 1e300)) if not math.isnan(g) else math.nan for g in norms]
    if len(logs) < 2 or any(math.isnan(v) for v in logs):
        raise InitError(f"gradient_slope: needs at least 2 finite gradient norms, got {list(norms)}")
    n = len(logs)
    mean_l, mean_y = (n - 1) / 2, sum(logs) / n
    return sum((i - mean_l) * (y - mean_y) for i, y in enumerate(logs)) / sum((i - mean_l) ** 2 for i in range(n))


@dataclass
class GradientBalance:
    """What :func:`balance_gradients` found: the membrane factor, the weight-gradient norms per neuron layer
    (input to output) before and after, and the :func:`scale_membrane` record of the write."""
    factor: float
    neurons: list[str]
    norms_before: list[float]
    norms_after: list[float]
    evaluations: int
    scaling: MembraneScaling
    fitted: list[bool]  # False: the layer's input is silent on the batch (its weight gradient is 0 at any scale)

    def _ratio(self, norms: list[float]) -> float:
        used = [g for g, f in zip(norms, self.fitted) if f]
        return max(used) / min(used) if min(used) > 0 and math.isfinite(max(used)) else math.inf

    @property
    def ratio_before(self) -> float:
        """Largest over smallest weight-gradient norm over the neuron layers with input, before."""
        return self._ratio(self.norms_before)

    @property
    def ratio_after(self) -> float:
        return self._ratio(self.norms_after)

    def __str__(self) -> str:
        silent = [n for n, f in zip(self.neurons, self.fitted) if not f]
        return (f"membrane scaled by {self.factor:.4g} ({self.evaluations} gradient passes): weight-gradient norms "
                f"max/min over {sum(self.fitted)} neuron layers {self.ratio_before:.3g} -> {self.ratio_after:.3g} "
                f"(input to output: {short_number(self.norms_before[0])} .. {short_number(self.norms_before[-1])} -> "
                f"{short_number(self.norms_after[0])} .. {short_number(self.norms_after[-1])})"
                + (f"; not fitted, their input silent: {', '.join(silent)}" if silent else ""))


def _random_projection(output: Any, seed: int) -> torch.Tensor:
    r""":math:`L = \sum_k \langle o_k, R_k \rangle / \sqrt{n}` over the output's floating tensors, :math:`R_k` standard
    normal from ``seed``: a loss whose gradient at the output is a fixed random direction, so the norms measure
    the network's backward gain and not a task's."""
    tensors = [t for t in all_tensors(output) if t.is_floating_point() and t.requires_grad]
    if not tensors:
        raise InitError("balance_gradients: the model's output does not depend on any weight (no gradient path)")
    generator = torch.Generator().manual_seed(seed)
    n = sum(t.numel() for t in tensors)
    projections = [(t * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)).sum() for t in tensors]
    return sum(projections[1:], projections[0]) / math.sqrt(n)  # dtypes may differ: no stack


def _gradient_norms_by_neuron(model: nn.Module, p: Plan, targets: list[_Target], run: Callable[[], Any],
                              loss_of: Callable[[Any], torch.Tensor], draws: SameDraws
                              ) -> tuple[list[float], list[bool]]:
    """||dL/dW|| of the weights feeding each target neuron (input to output), one pass from rest, and whether
    any of those layers received a non-zero input (a silent input makes the weight gradient 0 at every scale)."""
    layers = {t.name: [layer for layer in p.layers if layer.neuron_name == t.name] for t in targets}
    flat = list({id(layer.weight): layer.weight for ls in layers.values() for layer in ls}.values())
    fed: dict[int, bool] = {}

    def saw(module: nn.Module, args: tuple) -> None:
        fed[id(module)] = fed.get(id(module), False) or any(
            isinstance(a, torch.Tensor) and bool(torch.count_nonzero(a.detach())) for a in args)

    def evaluate() -> Any:
        fed.clear()
        for _, neuron, _ in p.neurons:
            reset_neuron(neuron)
        return run()

    handles = [m.register_forward_pre_hook(saw) for m in {id(l.module): l.module for ls in layers.values()
                                                          for l in ls}.values()]
    try:
        with preserved(model):  # states, requires_grad flags and RNG put back
            for w in flat:
                w.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_of(draws.run(evaluate))
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                    raise InitError("balance_gradients: loss_fn must return a scalar tensor that depends on the "
                                    "weights")
                if torch.isnan(loss.detach()).any():  # not an exploding gradient: nothing to balance
                    raise InitError("balance_gradients: the loss is NaN on this batch (a NaN in the model's output "
                                    "or in loss_fn); the model is unchanged")
                grads = torch.autograd.grad(loss.reshape(()), flat, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    by_id = {id(w): (0.0 if g is None else float(g.detach().double().pow(2).sum())) for w, g in zip(flat, grads)}
    norms = [math.sqrt(sum(by_id[id(layer.weight)] for layer in layers[t.name])) for t in targets]
    return norms, [any(fed.get(id(layer.module), False) for layer in layers[t.name]) for t in targets]


@entry_point("balance_gradients")
def balance_gradients(model: nn.Module, example_input: Any, *, steps: Optional[int] = None,
                      forward: Optional[Callable[[nn.Module, Any], Any]] = None,
                      loss_fn: Optional[Callable[[Any], torch.Tensor]] = None, skip: Skip = None, seed: int = 0,
                      bounds: tuple[float, float] = BALANCE_BOUNDS, process_group: Any = None) -> GradientBalance:
    r"""Scale the membrane (:func:`scale_membrane`) by the factor :math:`c` that makes the weight-gradient norms
    equal, on average, from the first neuron layer to the last: every spike unchanged, the backward pass neither
    vanishing nor exploding with depth.

    The surrogate derivative is evaluated at :math:`c(u-\theta)`, so each layer's backward gain grows with
    :math:`c` (for ATan, :math:`\mathbb{E}[h_{c\alpha}(u-\theta)^2]` grows with :math:`c`). With :math:`g_l` the
    norm of :math:`\partial L/\partial W_l` on the example batch and :math:`b(c)` the least-squares slope of
    :math:`\log g_l` over the layers (:func:`gradient_slope`), the search brackets and bisects :math:`\log c` for
    :math:`b(c) = 0`, stopping when the fitted first-to-last ratio :math:`e^{|b|(L-1)}` is within 1.5 (or after
    24 gradient passes, keeping the best), then writes that factor with :func:`scale_membrane`'s checks. The
    default loss is a fixed random projection of the output (seeded by ``seed``): the gain is the network's, not
    a task's; pass ``loss_fn(output) -> scalar`` for another.

    Args:
        model: the network after initialization (its rates are kept: no spike changes).
        example_input, steps, forward, skip, seed, process_group: as in :func:`scale_membrane`; under
            ``torch.distributed`` the slope is averaged over the ranks, so every rank takes the same factor.
        loss_fn: optional loss of the model's output (what ``forward``/``model`` returns; a list over ``steps``).
        bounds: the factors searched, ``(low, high)`` with ``0 < low < 1 < high``.

    Returns:
        GradientBalance: the factor, the norms per neuron layer before and after, the scaling record.

    Raises:
        InitError: no factor within ``bounds`` balances the gradients (the model is unchanged), or
            :func:`scale_membrane` refuses the model.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> _ = torch.manual_seed(0)
        >>> layers = [m for _ in range(12) for m in (nn.Linear(64, 64), snn.Leaky(beta=0.9, init_hidden=True))]
        >>> net, x = nn.Sequential(*layers), (torch.rand(32, 64) < 0.2).float()
        >>> _ = sip.initialize(net, "calibrated", x, steps=4, target_rate=0.15)
        >>> _ = sip.scale_membrane(net, 0.5, x, steps=4)  # a wide surrogate: the gradient fades toward the input
        >>> balance = sip.balance_gradients(net, x, steps=4)
        >>> balance.factor, balance.ratio_after < 10 < balance.ratio_before
        (2.0, True)
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"balance_gradients: model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        low, high = _checked_bounds(bounds)
        if loss_fn is not None and not callable(loss_fn):
            raise ArgumentTypeError(f"balance_gradients: loss_fn must be callable, got {type(loss_fn).__name__}")
        if example_input is None:
            raise InitError("balance_gradients: needs a real batch (example_input) to measure the gradients on")
        calls = checked_calls(input_calls(example_input, steps))
        p = plan_for_input(model, example_input, calls, forward)
        targets, _ = _targets(model, p, skip)
        if len(targets) < 2:
            raise InitError(f"balance_gradients: needs at least 2 neuron layers to balance, found {len(targets)}")
        run = runner(model, example_input, calls, steps, forward)
        loss_of = loss_fn if loss_fn is not None else (lambda output: _random_projection(output, seed))
        draws = SameDraws(seed)
        tensors = _drive_tensors(targets)
    except Exception as exc:
        agree("balance_gradients", 0, exc, process_group)
        raise
    agree("balance_gradients", _drive_fingerprint(targets, [low, high]), None, process_group)
    saved = Snapshot(tensors)

    def norms_at(factor: float) -> tuple[list[float], list[bool]]:
        """The norms with every target scaled by ``factor`` and which layers have input, the model put back
        afterwards; under torch.distributed the squared norms and the input flags are summed over the ranks, so
        every rank fits the same numbers."""
        undo: list[Callable[[], None]] = []
        try:
            _scale(tensors, targets, factor, undo)
            (norms, active), error = _gradient_norms_by_neuron(model, p, targets, run, loss_of, draws), None
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it before anyone raises
            (norms, active), error = ([], []), exc
        finally:
            _put_back(undo, saved)
        agree("balance_gradients", 0, error, process_group)
        if is_distributed(process_group):
            sums = all_reduce_sums([g * g for g in norms] + [float(a) for a in active], process_group)
            norms, active = [math.sqrt(v) for v in sums[:len(norms)]], [v > 0 for v in sums[len(norms):]]
        return norms, active

    def slope_at(factor: float) -> float:
        norms, active = norms_at(factor)
        tried[factor], fitted[:] = norms, active
        if all(g == 0 for g, a in zip(norms, active) if a) and sum(active) >= 2:
            return math.nan  # every gradient underflowed to 0: no slope, not a balance
        if not all(math.isfinite(g) for g in norms):  # overflow (inf, or inf·0 = NaN): exploding at this factor
            return -math.inf
        if sum(active) < 2:
            silent = [t.name for t, a in zip(targets, active) if not a]
            raise InitError(f"balance_gradients: the layers feeding {', '.join(silent)} receive no spikes on this "
                            "batch, so their weight gradients are 0 at every scale; fewer than 2 layers are left to "
                            "balance (initialize or calibrate first); the model is unchanged")
        return gradient_slope([g for g, a in zip(norms, active) if a])

    tried: dict[float, list[float]] = {}
    fitted: list[bool] = []
    found = _balanced_factor(slope_at, low, high, len(targets))
    if found is None:
        edge = max(tried, key=lambda f: abs(math.log(f)))  # the factor farthest from 1 the search reached
        edge_norms = [g for g, a in zip(tried[edge], fitted) if a]
        if edge_norms and all(g == 0 for g in edge_norms):
            raise InitError(f"balance_gradients: at factor {edge:g} every weight gradient underflows to 0, and no "
                            f"factor tried between 1 and {edge:g} balances them ({len(tried)} gradient passes); "
                            "narrow bounds=; the model is unchanged")
        b_edge = gradient_slope(edge_norms) if all(math.isfinite(g) for g in edge_norms) else -math.inf
        way = "vanish toward the input" if b_edge > 0 else "explode toward the input"
        silent = [t.name for t, a in zip(targets, fitted) if not a]
        cause = (f" (the layers feeding {', '.join(silent)} receive no spikes on this batch and the gradient "
                 "passes through them: initialize or calibrate first)" if silent else "")
        raise InitError(f"balance_gradients: the gradients {way} at every factor from 1 to {edge:g} (slope of "
                        f"log-norm per layer {b_edge:.3g} at {edge:g}); no membrane scale within bounds balances "
                        f"them{cause}; the model is unchanged")
    scaling = scale_membrane(model, found, example_input, steps=steps, forward=forward, skip=skip, seed=seed,
                             process_group=process_group)
    return GradientBalance(found, [t.name for t in targets], tried[1.0], tried[found], len(tried), scaling,
                           list(fitted))


def _checked_bounds(bounds: Any) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise OptionError(f"balance_gradients: bounds must be two numbers (low, high), got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < 1 < high):
        raise OptionError(f"balance_gradients: bounds must satisfy 0 < low < 1 < high, got {bounds!r}")
    return low, high


def _balanced_factor(slope_at: Callable[[float], float], low: float, high: float, layers: int) -> Optional[float]:
    """The factor in [low, high] where the log-norm slope crosses 0 (it falls as the factor grows): from 1,
    doubling or halving until the sign changes, then bisection in log space; None if it never changes sign."""
    flat = math.log(FLATNESS) / max(layers - 1, 1)
    b = slope_at(1.0)
    if math.isnan(b):
        return None
    best = (abs(b), 1.0)
    if abs(b) <= flat:
        return 1.0
    inner, direction = 1.0, (2.0 if b > 0 else 0.5)  # vanishing: more gain, a larger factor
    evaluations = 1
    while True:
        outer = min(max(inner * direction, low), high)
        if outer == inner:
            return None
        b_outer = slope_at(outer)
        evaluations += 1
        if math.isnan(b_outer) or evaluations >= BALANCE_EVALUATIONS:  # no gradient left, or out of passes
            return None
        best = min(best, (abs(b_outer), outer))
        if abs(b_outer) <= flat:
            return outer
        if (b_outer > 0) != (b > 0):
            break
        inner = outer
    while evaluations < BALANCE_EVALUATIONS:  # b(inner) and b(outer) have opposite signs
        middle = math.sqrt(inner * outer)
        b_middle = slope_at(middle)
        evaluations += 1
        if math.isnan(b_middle):  # no gradient at all there: not a candidate; narrow toward the other side
            outer = middle
            continue
        best = min(best, (abs(b_middle), middle))
        if abs(b_middle) <= flat:
            return middle
        if (b_middle > 0) == (b > 0):
            inner = middle
        else:
            outer = middle
    return best[1] if math.isfinite(best[0]) else None
