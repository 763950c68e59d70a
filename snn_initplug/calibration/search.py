r"""The scale search and its record: find the factor on a neuron's drive that gives the target firing rate.

:math:`r(s)` grows with :math:`s` for zero-mean weights, so the search brackets the target by doubling or
halving :math:`s` and then refines it by regula falsi on :math:`\log s` (Illinois variant), stopping at
``|r/r* - 1| <= tolerance``.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch

from ..distributed import all_reduce_counts, is_distributed
from ..errors import InitError
from ..options import DEFAULT_TARGET_RATE, CalibrationOptions, TargetRate
from ..reports import LayerCalibration
from ..running import Group
from ..transaction import agree

# A spike count that does not move over this many doublings in a row (a factor 2^6 = 64 in the weight) will not
# reach the target by scaling: stop there instead of spending every evaluation up to ×5e8.
_PLATEAU_STEPS = 6


_JUMP_WIDTH = 1e-3  # a bracket narrower than this in log-scale (×1.001) holds a jump of the rate, not a root


@dataclass(frozen=True)
class SearchSettings:
    """What every scale search of one ``calibrate`` call shares: the target rates, the relative tolerance, the
    evaluations per layer, the seed of every evaluation's random draws and the process group whose ranks
    measure the rate together."""

    target_rate: TargetRate
    tolerance: float
    max_evaluations: int
    seed: int
    process_group: Any = None

    @classmethod
    def of(cls, options: CalibrationOptions, process_group: Any) -> SearchSettings:
        return cls(options.target_rate, options.tolerance, options.max_evaluations, options.seed, process_group)

    def target(self, neuron_name: str) -> float:
        """The target rate of the named neuron."""
        return target_for(neuron_name, self.target_rate)

    def rate(self, evaluate: Callable[[], Sequence[torch.Tensor]]) -> float:
        """:func:`measured_rate` of one evaluation, over the ranks of the process group."""
        return measured_rate(evaluate, self.process_group)

    def scale(self, rate_at: Callable[[float], float], target: float,
              cause: Union[str, Callable[[], str]] = "a silent input?", lever: str = "the weight scaled"
              ) -> SearchResult:
        """:func:`search` with these settings' tolerance and evaluations."""
        return search(rate_at, target, self.tolerance, self.max_evaluations, cause, lever)


@dataclass(frozen=True)
class SearchResult:
    """What a search found: the scale (the best one found when the target was not reached), the rate there, the
    rate at scale 1, the evaluations spent, and ``"ok"`` or why the target was not reached."""

    scale: float
    rate: float
    initial_rate: float
    evaluations: int
    status: str

    def record(self, neuron: str, parameters: list[str], target: float,
               factor: Optional[float] = None) -> LayerCalibration:
        """The layer's calibration record; ``factor`` is what the parameters were multiplied by, when it is not
        the scale itself (a threshold divided by the scale)."""
        return LayerCalibration(neuron, parameters, target, self.initial_rate, self.rate,
                                self.scale if factor is None else factor, self.evaluations, self.status)

    def record_of(self, group: Group, target: float) -> LayerCalibration:
        """The record of a neuron whose weights (``group.params``) were multiplied by the scale."""
        return self.record(group.neuron_name, [name for name, _ in group.params], target)


class _Curve:
    """The rate at each scale evaluated so far (every scale is evaluated once)."""

    def __init__(self, rate_at: Callable[[float], float], target: float, tolerance: float):
        self.rate_at, self.target, self.tolerance = rate_at, target, tolerance
        self.cache: dict[float, float] = {}

    def __call__(self, s: float) -> float:
        if s not in self.cache:
            self.cache[s] = self.rate_at(s)
        return self.cache[s]

    def good(self, r: float) -> bool:
        return abs(r / self.target - 1.0) <= self.tolerance

    def best(self) -> float:  # nearest the target; of equals, the scale nearest 1 (the least change)
        return min(self.cache, key=lambda k: (abs(self.cache[k] / self.target - 1.0), abs(math.log(k))))

    def result(self, s: float, initial: float, status: str) -> SearchResult:
        return SearchResult(s, self.cache[s], initial, len(self.cache), status)


def search(rate_at: Callable[[float], float], target: float, tolerance: float, max_evals: int,
           silent_cause: Union[str, Callable[[], str]] = "a silent input?", lever: str = "the weight scaled"
           ) -> SearchResult:
    """Find s with |rate_at(s)/target - 1| <= tolerance.

    When the target cannot be bracketed, s is the best scale found (the rate nearest the target), not 1, and the
    status names the likely cause: ``silent_cause`` when no spike comes at any scale, saturation when the rate
    stops growing, an offset when the rate stays above the target however small the weight.
    """
    f = _Curve(rate_at, target, tolerance)
    initial = f(1.0)
    if f.good(initial):
        return f.result(1.0, initial, "ok")
    s, lo, hi = _bracket(f, initial, max_evals)
    if f.good(f(s)):  # a doubling hit the target
        return f.result(s, initial, "ok")
    if hi is None or lo is None:
        k = f.best()
        if hi is None and f(s) == 0.0:
            cause = silent_cause() if callable(silent_cause) else silent_cause  # computed only when needed
        elif hi is None:
            cause = ("saturation: the rate stops growing with the scale (neurons with no input, "
                     "or a neuron that cannot fire faster)")
        else:
            cause = "driven by a bias or offset; try bias='zero'"
        where = "below" if hi is None else "above"
        return f.result(k, initial, (f"unreachable: the rate stays {where} the target (at {f(s):.3g} with "
                                     f"{lever} ×{s:.3g}; kept ×{k:.3g}, rate {f.cache[k]:.3g}): {cause}"))
    return _regula_falsi(f, lo, hi, initial, max_evals, lever)


def _bracket(f: _Curve, initial: float, max_evals: int) -> tuple[float, Optional[float], Optional[float]]:
    """Double (or halve) the scale from 1 until the rate crosses the target; returns the last scale and the
    ends found, ``lo`` below the target and ``hi`` above it (None: not found). The last scale's rate is
    within the tolerance when the doubling hit the target."""
    step = 2.0 if initial < f.target else 0.5
    lo, hi = (1.0, None) if initial < f.target else (None, 1.0)
    s = 1.0
    unchanged = 0  # doublings (or halvings) in a row that left the spike count exactly as it was
    for _ in range(60):
        if len(f.cache) >= max_evals or unchanged >= _PLATEAU_STEPS:
            break
        previous = f(s)
        s *= step
        r = f(s)
        if f.good(r):
            break
        unchanged = unchanged + 1 if r == previous else 0
        if r < f.target:
            lo = s
        else:
            hi = s
        if lo is not None and hi is not None:
            break
    return s, lo, hi


def _regula_falsi(f: _Curve, lo: float, hi: float, initial: float, max_evals: int, lever: str) -> SearchResult:
    """Regula falsi on log s (Illinois), from scales whose rates bracket the target."""
    a, b = math.log(lo), math.log(hi)
    fa, fb = f(lo) - f.target, f(hi) - f.target
    side = 0
    while len(f.cache) < max_evals:
        c = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if not (min(a, b) < c < max(a, b)):
            c = 0.5 * (a + b)
        r = f(math.exp(c))
        if f.good(r):
            return f.result(math.exp(c), initial, "ok")
        fc = r - f.target
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
    k = f.best()
    if abs(b - a) < _JUMP_WIDTH:
        def at(log_scale: float) -> float:  # the evaluated scale at that end of the bracket
            return f.cache[min(f.cache, key=lambda key: abs(math.log(key) - log_scale))]
        below, above = sorted((at(a), at(b)))
        return f.result(k, initial, (
            f"unreachable within the tolerance: the rate jumps from {below:.4g} to {above:.4g} within ×"
            f"{math.exp(abs(b - a)):.4f} of the scale (few neurons, a small batch, or an input taking few distinct "
            f"values); kept {lever} ×{k:.4g}, rate {f.cache[k]:.4g}"))
    return f.result(k, initial, (f"tolerance not reached in {len(f.cache)} evaluations "
                                 f"(best rate {f.cache[k]:.4g}; the rate may jump in steps: "
                                 "few neurons or a small batch)"))


def silent_cause(group: Group) -> str:
    """Why no scale makes this neuron fire: a weight that is all zero (BatchNorm γ = 0, as torchvision-style
    ``zero_init_residual=True`` sets it) stays zero when scaled; otherwise no spikes reach the layer."""
    zero = [name for name, param in group.params if not bool(param.detach().any())]
    if zero:
        return (f"{', '.join(zero)} is all zero (BatchNorm γ = 0, e.g. zero_init_residual=True), and a scaled "
                "zero stays zero")
    return "a silent input? (no spikes reach the layer at any scale)"


def off_the_search(record: LayerCalibration, real: float, tolerance: float) -> bool:
    """A real pass's rate outside the tolerance band around the rate the search reported for the layer: the
    shortcut the search ran on (a cached or re-run input) did not hold there."""
    return abs(real - record.rate) > tolerance * max(record.target, record.rate)


def shortcut_failed(record: LayerCalibration, real: float, tolerance: float) -> bool:
    """A search on a shortcut (a re-run module, an input taken as a sum) that a real pass contradicts
    (:func:`off_the_search`), or that did not reach its target: the shortcut's input may be why."""
    return record.status != "ok" or off_the_search(record, real, tolerance)


def spike_rate(outputs: Sequence[torch.Tensor], group=None) -> float:
    """Spikes per neuron per step: (non-zero entries) / (entries), over batch, neurons and time.

    Under ``torch.distributed`` both integer counts are summed over ``group`` first, so the rate is that of the
    global batch, bit-identical on every rank (integer sums do not depend on order), and the search on every
    rank takes the same steps.
    """
    total = sum(int(torch.count_nonzero(o)) for o in outputs)
    count = sum(o.numel() for o in outputs)
    total, count = all_reduce_counts([total, count], group)
    return total / max(count, 1)


def measured_rate(evaluate: Callable[[], Sequence[torch.Tensor]], group=None) -> float:
    """:func:`spike_rate` of one search step's outputs. Under ``torch.distributed`` a rank whose evaluation
    raises still joins this step's agreement, so every rank stops at the same step with the same
    :class:`~snn_initplug.errors.DistributedError` (:func:`~snn_initplug.transaction.agree`) and restores its
    model, instead of the others waiting in the count's all-reduce until the group's timeout."""
    if not is_distributed(group):
        return spike_rate(evaluate())
    try:
        outputs, error = evaluate(), None
    except Exception as exc:  # noqa: BLE001 - re-raised by agree, on this rank chained to the others' error
        outputs, error = [], exc
    agree("calibrate", 0, error, group)
    return spike_rate(outputs, group)


def target_for(name: str, target_rate: Union[float, dict[str, float], Callable[[str], float]]) -> float:
    """The target rate of the named neuron: the number, the last matching ``{pattern: rate}`` entry (else "*",
    else the default), or the callable's value; checked to lie in (0, 1)."""
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
