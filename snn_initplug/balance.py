"""``balance_gradients``: the membrane scale (:func:`~snn_initplug.membrane.scale_membrane`) at which the
weight-gradient norms neither vanish nor explode with depth, found by bisection on the slope of their log over
the layers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .distributed import all_reduce_sums, is_distributed
from .errors import ArgumentTypeError, InitError, OptionError
from .guard import entry_point
from .membrane import (
    MembraneScaling,
    ScalingTarget,
    drive_fingerprint,
    drive_tensors,
    put_back,
    scale_drives,
    scale_membrane,
    scaling_targets,
)
from .planning import Plan, preserved, reset_neuron
from .running import checked_calls, input_calls, plan_for_input, runner
from .selection import Skip
from .state import all_tensors
from .tables import short_number
from .transaction import SameDraws, Snapshot, agree

__all__ = ["balance_gradients", "GradientBalance", "gradient_slope"]

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


def _gradient_norms_by_neuron(model: nn.Module, p: Plan, targets: list[ScalingTarget], run: Callable[[], Any],
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
        calls = checked_calls("balance_gradients", input_calls("balance_gradients", example_input, steps))
        p = plan_for_input(model, example_input, calls, forward)
        targets, _ = scaling_targets(model, p, skip)
        if len(targets) < 2:
            raise InitError(f"balance_gradients: needs at least 2 neuron layers to balance, found {len(targets)}")
        run = runner(model, example_input, calls, steps, forward)
        loss_of = loss_fn if loss_fn is not None else (lambda output: _random_projection(output, seed))
        draws = SameDraws(seed)
        tensors = drive_tensors(targets)
    except Exception as exc:
        agree("balance_gradients", 0, exc, process_group)
        raise
    agree("balance_gradients", drive_fingerprint(targets, [low, high]), None, process_group)
    saved = Snapshot(tensors)

    def norms_at(factor: float) -> tuple[list[float], list[bool]]:
        """The norms with every target scaled by ``factor`` and which layers have input, the model put back
        afterwards; under torch.distributed the squared norms and the input flags are summed over the ranks, so
        every rank fits the same numbers."""
        undo: list[Callable[[], None]] = []
        try:
            scale_drives(tensors, targets, factor, undo)
            (norms, active), error = _gradient_norms_by_neuron(model, p, targets, run, loss_of, draws), None
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it before anyone raises
            (norms, active), error = ([], []), exc
        finally:
            put_back(undo, saved)
        agree("balance_gradients", 0, error, process_group)
        if is_distributed(process_group):
            sums = all_reduce_sums([g * g for g in norms] + [float(a) for a in active], process_group)
            norms, active = [math.sqrt(v) for v in sums[:len(norms)]], [v > 0 for v in sums[len(norms):]]
        return norms, active

    def slope_at(factor: float) -> float:
        norms, active = norms_at(factor)
        tried[factor], fitted[:] = norms, active
        return _slope(targets, norms, active)

    tried: dict[float, list[float]] = {}
    fitted: list[bool] = []
    found = _balanced_factor(slope_at, low, high, len(targets))
    if found is None:
        raise _unbalanced(targets, tried, fitted, low, high)
    scaling = scale_membrane(model, found, example_input, steps=steps, forward=forward, skip=skip, seed=seed,
                             process_group=process_group)
    return GradientBalance(found, [t.name for t in targets], tried[1.0], tried[found], len(tried), scaling,
                           list(fitted))


def _too_few_fed(targets: list[ScalingTarget], active: list[bool]) -> InitError:
    """The error when fewer than 2 layers receive spikes, so there is no slope to fit."""
    silent = [t.name for t, a in zip(targets, active) if not a]
    return InitError(f"balance_gradients: the layers feeding {', '.join(silent)} receive no spikes on this "
                     "batch, so their weight gradients are 0 at every scale; fewer than 2 layers are left to "
                     "balance (initialize or calibrate first); the model is unchanged")


def _slope(targets: list[ScalingTarget], norms: list[float], active: list[bool]) -> float:
    """The log-norm slope over the layers with input; -inf where a norm overflowed (exploding at this factor),
    NaN where every norm underflowed to 0 (no slope: not a balance)."""
    if sum(active) >= 2 and all(g == 0 for g, a in zip(norms, active) if a):
        return math.nan
    if not all(math.isfinite(g) for g in norms):  # overflow (inf, or inf·0 = NaN): exploding at this factor
        return -math.inf
    if sum(active) < 2:
        raise _too_few_fed(targets, active)
    return gradient_slope([g for g, a in zip(norms, active) if a])


def _unbalanced(targets: list[ScalingTarget], tried: dict[float, list[float]], fitted: list[bool], low: float,
                high: float) -> InitError:
    """The error when no factor within the bounds balances the gradients: which way they go at the bound
    reached, and the layers without input that the gradient passes through."""
    edge = max(tried, key=lambda f: abs(math.log(f)))  # the factor farthest from 1 the search reached
    edge_norms = [g for g, a in zip(tried[edge], fitted) if a]
    if edge_norms and all(g == 0 for g in edge_norms):
        return InitError(f"balance_gradients: at factor {edge:g} every weight gradient underflows to 0, and no "
                         f"factor tried between 1 and {edge:g} balances them ({len(tried)} gradient passes); "
                         "narrow bounds=; the model is unchanged")
    b_edge = gradient_slope(edge_norms) if all(math.isfinite(g) for g in edge_norms) else -math.inf
    way = "vanish toward the input" if b_edge > 0 else "explode toward the input"
    silent = [t.name for t, a in zip(targets, fitted) if not a]
    cause = (f" (the layers feeding {', '.join(silent)} receive no spikes on this batch and the gradient "
             "passes through them: initialize or calibrate first)" if silent else "")
    return InitError(f"balance_gradients: the gradients {way} at every factor from 1 to {edge:g} (slope of "
                     f"log-norm per layer {b_edge:.3g} at {edge:g}); no membrane scale within bounds balances "
                     f"them{cause}; the model is unchanged")


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
