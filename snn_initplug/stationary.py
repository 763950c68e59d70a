r"""SpikeInit's membrane laws (Shi & Yu, ICML 2026): numbers in, numbers out.

The neuron, in membrane units (:math:`x_t` is the input current after the neuron's input scaling
:math:`\lambda`)::

    y_t = κ·y_{t-1} + x_t,    spike when y_t ≥ θ,    then the reset

**Gaussian closure** (Theorem 4.1; hard reset to 0, stationary): with the membrane :math:`y \sim
\mathcal{N}(\mu, \sigma_y^2)`, :math:`a = (\theta - \mu)/\sigma_y` and i.i.d. inputs of std :math:`s`,

.. math::
    \mu = \kappa\,\big(\mu\,\Phi(a) - \sigma_y\,\varphi(a)\big), \qquad
    \mu^2 + \sigma_y^2 = \kappa^2\big((\mu^2 + \sigma_y^2)\,\Phi(a) - \sigma_y(\theta + \mu)\,\varphi(a)\big) + s^2,

solved for :math:`(\mu, \sigma_y)` (:func:`stationary_membrane`); the firing probability is
:math:`1 - \Phi(a)`, and :func:`spike_input_std` finds the :math:`s` where it equals the target (Algorithm 2).
The closure's rate grows with :math:`s` towards a limit below 1/2 (:func:`closure_rate_limit`, e.g. 0.183 at
κ = 0.9): a target above it has no solution at any weight scale.

**Static (direct-coded) input**, one draw :math:`x \sim \mathcal{N}(0, s^2)` held for every step:

.. math::
    P_\mathrm{static}(s) = Q(\theta/s) + \sum_{k\ge1}\frac{1}{k+1}\Big[\Phi\Big(\frac{\theta}{s S_{k-1}}\Big)
    - \Phi\Big(\frac{\theta}{s S_k}\Big)\Big], \qquad S_k = \sum_{j=0}^{k}\kappa^j

(:func:`static_firing_probability`; :func:`static_input_std` solves it by Brent's method).

**Simulation** (Algorithm 3): where the closure does not hold (a subtractive reset, a hard reset to another
value, per-neuron parameters, a finite number of steps), :func:`simulate_membrane` runs the update above over
``steps`` steps from rest (or to stationarity) for many seeded Gaussian input sequences, and
:func:`simulated_input_std` bisects :math:`s` on the simulated rate.

**Backward** (Theorem 5.1): the surrogate's shape :math:`\alpha^*` solves
:math:`E[h_\alpha(y - \theta)^2] = G` with :func:`gradient_target` :math:`G`, the expectation by quadrature
under :math:`\mathcal{N}(\mu_y, \sigma_y^2)` (:func:`surrogate_shape`), for any surrogate family given as
``alpha -> spike function``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
from scipy import optimize, special

from .errors import InitError
from .surrogate import Normal, surrogate_moments

__all__ = [
    "StationaryMembrane",
    "stationary_membrane",
    "closure_rate_limit",
    "spike_input_std",
    "static_firing_probability",
    "static_input_std",
    "MembraneDynamics",
    "SimulatedMembrane",
    "simulate_membrane",
    "simulated_input_std",
    "SimulatedScale",
    "gradient_target",
    "surrogate_shape",
]

Values = Union[float, np.ndarray]


def _phi(a: float) -> float:
    return math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class StationaryMembrane:
    """The membrane :math:`\\mathcal{N}(\\mu, \\sigma_y^2)` a neuron settles to, its firing probability per step
    and the input std :math:`s` (membrane units) that drives it."""

    mean: float
    std: float
    rate: float
    input_std: float


# ----------------------------------------------------------------------------------------------------------
# Gaussian closure (Theorem 4.1)
# ----------------------------------------------------------------------------------------------------------
def _closure_residuals(v: np.ndarray, s: float, kappa: float, theta: float) -> list[float]:
    mu, sigma = v[0], math.exp(v[1])
    a = (theta - mu) / sigma
    below, density = float(special.ndtr(a)), _phi(a)
    second = mu * mu + sigma * sigma
    mean_balance = kappa * (mu * below - sigma * density) - mu
    variance_balance = kappa * kappa * (second * below - sigma * (theta + mu) * density) + s * s - second
    scale = max(theta, s)
    return [mean_balance / scale, variance_balance / scale**2]


def stationary_membrane(input_std: float, kappa: float, threshold: float) -> StationaryMembrane:
    r"""The stationary membrane of the Gaussian closure (Theorem 4.1) for i.i.d. inputs of std ``input_std``.

    A 2-equation root find for :math:`(\mu, \log\sigma_y)` from the AR(1) start :math:`\mu = 0`,
    :math:`\sigma_y = s/\sqrt{1-\kappa^2}`.

    Args:
        input_std: :math:`s`, the std of the input current in membrane units (after :math:`\lambda`).
        kappa: the decay :math:`\kappa \in [0, 1)`.
        threshold: :math:`\theta > 0`.

    Returns:
        StationaryMembrane: :math:`\mu`, :math:`\sigma_y`, the firing probability :math:`1 - \Phi(a)`, :math:`s`.

    Raises:
        InitError: :math:`\kappa \ge 1` (no leak: the membrane drifts down without bound and has no stationary
            law; use a finite number of steps) or no root found.

    Example:
        >>> from snn_initplug.stationary import stationary_membrane
        >>> m = stationary_membrane(5.1569 * 0.5 * 0.1 ** 0.5, kappa=0.5, threshold=1.0)
        >>> round(m.mean, 4), round(m.std, 4), round(m.rate, 4)
        (-0.1422, 0.8913, 0.1)
    """
    if not (0.0 <= kappa < 1.0):
        raise InitError(f"spikeinit: the Gaussian closure needs a leak (0 <= κ < 1), got κ = {kappa}: without one "
                        "the membrane has no stationary law; give steps=T (the simulated T-step variant)")
    if not (math.isfinite(input_std) and input_std > 0 and math.isfinite(threshold) and threshold > 0):
        raise InitError(f"spikeinit: needs a positive input std and threshold, got s = {input_std}, θ = {threshold}")
    start = [0.0, math.log(input_std / math.sqrt(1.0 - kappa * kappa))]
    solution = optimize.root(_closure_residuals, start, args=(input_std, kappa, threshold), method="hybr",
                             options={"xtol": 1e-13})
    residual = max(abs(r) for r in _closure_residuals(solution.x, input_std, kappa, threshold))
    if not (solution.success or residual < 1e-10):
        raise InitError(f"spikeinit: the Gaussian closure has no root for s = {input_std:.4g}, κ = {kappa}, "
                        f"θ = {threshold} ({solution.message})")
    mu, sigma = float(solution.x[0]), math.exp(float(solution.x[1]))
    return StationaryMembrane(mu, sigma, float(special.ndtr(-(threshold - mu) / sigma)), float(input_std))


@functools.lru_cache(maxsize=256)
def closure_rate_limit(kappa: float) -> float:
    """The largest firing probability the closure reaches, its limit for an input std much larger than θ (the
    closure at θ = 0, where every scale is the same); e.g. 0.183 at κ = 0.9, 0.232 at κ = 0.5."""
    return stationary_membrane(1.0, kappa, 1e-12).rate


def _bisect_increasing(f: Callable[[float], float], target: float, low: float, high: float,
                       rtol: float = 1e-12) -> float:
    """The x in [low, high] with f(x) = target for an increasing f, by bisection in log x."""
    lo, hi = math.log(low), math.log(high)
    for _ in range(200):
        middle = 0.5 * (lo + hi)
        if f(math.exp(middle)) < target:
            lo = middle
        else:
            hi = middle
        if hi - lo < rtol:
            break
    return math.exp(0.5 * (lo + hi))


def _widened(rate_at: Callable[[float], float], target: float, threshold: float, entry: str) -> tuple[float, float]:
    """A bracket [low, high] of the input std with rate(low) < target <= rate(high), widened from
    [θ/100, 10 θ] by factors of 10 (up to 1e6 θ either way)."""
    low, high = threshold / 100.0, 10.0 * threshold
    for _ in range(5):
        if rate_at(high) >= target:
            break
        low, high = high, high * 10.0
    else:
        raise InitError(f"{entry}: no input std up to {high:.3g} (θ = {threshold:g}) fires at the target rate "
                        f"{target:g} (the rate there is {rate_at(high):.4g})")
    for _ in range(5):
        if rate_at(low) < target:
            break
        high, low = low, low / 100.0
    else:
        raise InitError(f"{entry}: even an input std of {low:.3g} (θ = {threshold:g}) fires above the target rate "
                        f"{target:g}")
    return low, high


@functools.lru_cache(maxsize=256)
def spike_input_std(target_rate: float, kappa: float, threshold: float) -> float:
    r"""The input std :math:`s` (membrane units) at which the closure's firing probability is ``target_rate``
    (Algorithm 2), by bisection on :math:`\log s`; the bracket starts at :math:`[\theta/100, 10\theta]` and is
    widened while the target lies above it. A weight layer fed by spikes of probability :math:`p` then takes
    :math:`\sigma^* = s/(\lambda\sqrt{p})` (weights :math:`\mathcal{N}(0, \sigma^{*2}/\mathrm{fan\_in})`).

    Raises:
        InitError: the target is at or above :func:`closure_rate_limit` (no weight scale reaches it under the
            closure), naming that limit.
    """
    limit = closure_rate_limit(kappa)
    if not target_rate < limit:
        raise InitError(f"spikeinit: the target rate {target_rate:g} is out of reach of the Gaussian closure at "
                        f"κ = {kappa:g}: its firing probability rises with the weight scale towards {limit:.4f} and "
                        "never exceeds it (a leaky neuron whose membrane is driven down by its resets); choose "
                        f"target_rate < {limit:.3f}, or steps=T to simulate the neuron over T steps")
    rate_at = lambda s: stationary_membrane(s, kappa, threshold).rate  # noqa: E731
    low, high = _widened(rate_at, target_rate, threshold, "spikeinit")
    return _bisect_increasing(rate_at, target_rate, low, high)


# ----------------------------------------------------------------------------------------------------------
# Static analog input
# ----------------------------------------------------------------------------------------------------------
def static_firing_probability(input_std: float, kappa: float, threshold: float) -> float:
    r""":math:`P_\mathrm{static}(s)`: the long-run firing probability of a neuron with a hard reset to 0 whose
    input is one draw :math:`x \sim \mathcal{N}(0, s^2)` held for every step (a direct-coded frame). An input
    in :math:`(\theta/S_k, \theta/S_{k-1}]` fires every :math:`k+1` steps.

    Example:
        >>> from snn_initplug.stationary import static_firing_probability
        >>> round(static_firing_probability(1.1425 * 0.5, kappa=0.5, threshold=1.0), 4)
        0.1
    """
    if not (math.isfinite(input_std) and input_std > 0):
        raise InitError(f"spikeinit: the input std must be positive and finite, got {input_std}")
    z = threshold / input_std
    total = float(special.ndtr(-z))
    previous, k = 1.0, 1
    while k < 1_000_000:
        partial = (1.0 - kappa ** (k + 1)) / (1.0 - kappa) if kappa < 1.0 else float(k + 1)
        term = (float(special.ndtr(z / previous)) - float(special.ndtr(z / partial))) / (k + 1)
        total += term
        # the sums S_k have converged (a leak: inputs below θ(1 − κ) never fire) or the terms are negligible
        if (kappa < 1.0 and partial - previous < 1e-15 * partial) or (k > 16 and term < 1e-17):
            break
        previous, k = partial, k + 1
    return total


@functools.lru_cache(maxsize=256)
def static_input_std(target_rate: float, kappa: float, threshold: float) -> float:
    r"""The :math:`s` with :math:`P_\mathrm{static}(s)` = ``target_rate`` (Brent's method); a layer fed by
    an analog input of second moment :math:`q` takes :math:`\sigma = s/(\lambda\sqrt{q})`."""
    rate_at = lambda s: static_firing_probability(s, kappa, threshold)  # noqa: E731
    if not target_rate < 0.5:  # P_static < P(x > 0) = 1/2 at every s
        raise InitError(f"spikeinit: a static analog input fires at most half the neurons (those whose input is "
                        f"positive); the target rate {target_rate:g} is out of reach for the first layer")
    low, high = _widened(rate_at, target_rate, threshold, "spikeinit")
    return float(optimize.brentq(lambda s: rate_at(s) - target_rate, low, high, xtol=1e-14, rtol=1e-13))


# ----------------------------------------------------------------------------------------------------------
# Simulation (Algorithm 3)
# ----------------------------------------------------------------------------------------------------------
SIMULATED_SAMPLES = 1 << 15


@dataclass(frozen=True)
class MembraneDynamics:
    r"""The neuron simulated: decay :math:`\kappa`, threshold :math:`\theta` (numbers, or per-neuron tuples of
    the same length), ``reset`` ``"hard"`` (to ``reset_value``), ``"subtract"`` or ``"none"``;
    ``reset_decays``: a subtractive reset removes θ right after the spike, so it decays with the membrane
    (SpikingJelly: :math:`y_t = \kappa(y_{t-1} - \theta s_{t-1}) + x_t`), rather than at the next step,
    undecayed (snnTorch: :math:`y_t = \kappa y_{t-1} + x_t - \theta s_{t-1}`)."""

    kappa: Union[float, tuple[float, ...]]
    threshold: Union[float, tuple[float, ...]]
    reset: str = "hard"
    reset_value: float = 0.0
    reset_decays: bool = False

    def __post_init__(self):
        if self.reset not in ("hard", "subtract", "none"):
            raise InitError(f"spikeinit: unknown reset {self.reset!r}")
        kappa, theta = np.atleast_1d(self.kappa), np.atleast_1d(self.threshold)
        if kappa.min() < 0 or kappa.max() > 1 or theta.min() <= 0 or not np.isfinite(theta).all():
            raise InitError(f"spikeinit: needs 0 <= κ <= 1 and θ > 0, got κ in [{kappa.min()}, {kappa.max()}], "
                            f"θ in [{theta.min()}, {theta.max()}]")

    @property
    def closed_form(self) -> bool:
        """The closure holds: one κ < 1 and one θ for every neuron, and a hard reset to 0."""
        return isinstance(self.kappa, float) and isinstance(self.threshold, float) and self.kappa < 1.0 \
            and self.reset == "hard" and self.reset_value == 0.0


@dataclass(frozen=True)
class SimulatedMembrane:
    """What :func:`simulate_membrane` measured: the firing probability per step (averaged over the neurons),
    its mean over the steps counted, the mean over neurons of the squared per-neuron rate (unbiased from the
    spike counts), and the mean and std of the membrane the surrogate sees (before the reset)."""

    rates: tuple[float, ...]
    rate: float
    rate_square: float
    mean: float
    std: float


def _horizon(dynamics: MembraneDynamics, steps: Optional[int]) -> tuple[int, int]:
    """(steps run, steps counted): T and T, or for the stationary rate a burn-in of ten membrane time constants
    (at least 32 steps) and as many counted."""
    if steps is not None:
        return steps, steps
    kappa = float(np.max(dynamics.kappa))
    if kappa >= 1.0:
        raise InitError("spikeinit: a neuron without leak (κ = 1, IF) has no stationary firing rate (its membrane "
                        "drifts down without bound); give steps=T, the number of time steps the model runs")
    burn = max(32, math.ceil(10.0 / (1.0 - kappa)))
    return 2 * burn, burn


def simulate_membrane(input_std: Values, dynamics: MembraneDynamics, steps: Optional[int] = None, *,
                      held_fraction: float = 0.0, samples: int = SIMULATED_SAMPLES, seed: int = 0
                      ) -> SimulatedMembrane:
    r"""Run the neuron's update (Algorithm 3) from rest for ``samples`` seeded neurons whose input has std
    ``input_std`` (membrane units; a number, or one per neuron): a fraction ``held_fraction`` f of its
    variance is one draw per neuron held over every step, the rest drawn anew at every step,

    .. math:: x_{i,t} = s\,(\sqrt{f}\,z_i + \sqrt{1-f}\,\xi_{i,t}).

    f = 1 is a static analog input (a direct-coded frame); f = 0 the i.i.d. input of the closure. A layer of
    fixed weights fed by spikes of rates :math:`p_j` gives neuron i the mean :math:`\sum_j W_{ij} p_j`, which
    does not change over time: :math:`f = E[p_j^2]/E[p_j]` of its input (:func:`simulated_input_std`).
    Over ``steps`` steps, or to stationarity when None. Per-neuron parameters: the samples are spread evenly
    over the neurons. The same seed gives the same draws (common random numbers for a search).
    """
    run, counted = _horizon(dynamics, steps)
    rng = np.random.default_rng(seed)
    kappa, theta = np.asarray(dynamics.kappa, dtype=np.float64), np.asarray(dynamics.threshold, dtype=np.float64)
    scale = np.asarray(input_std, dtype=np.float64)
    neurons = max(kappa.size, theta.size, scale.size)
    per = max(1, samples // neurons)

    def spread(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values, (neurons,)).repeat(per) if values.size > 1 else values.reshape(())

    kappa, theta, scale = spread(kappa), spread(theta), spread(scale)
    n = neurons * per
    y = np.zeros(n)
    held = scale * math.sqrt(held_fraction) * rng.standard_normal(n)
    fresh = scale * math.sqrt(1.0 - held_fraction)
    previous_spikes = np.zeros(n, dtype=bool)
    counts = np.zeros(n)
    rates, total, total_sq, seen = [], 0.0, 0.0, 0
    for t in range(run):
        x = held + fresh * rng.standard_normal(n) if held_fraction < 1.0 else held
        if dynamics.reset == "subtract" and not dynamics.reset_decays:
            y = kappa * y + x - theta * previous_spikes
        else:
            y = kappa * y + x
        spikes = y >= theta
        if t >= run - counted:
            rates.append(float(spikes.mean()))
            counts += spikes
            total, total_sq, seen = total + float(y.sum()), total_sq + float((y * y).sum()), seen + n
        if dynamics.reset == "hard":
            y = np.where(spikes, dynamics.reset_value, y)
        elif dynamics.reset == "subtract" and dynamics.reset_decays:
            y = y - theta * spikes
        previous_spikes = spikes
    mean = total / seen
    # E[p_i²] from the counts c_i of N steps: E[c(c−1)]/(N(N−1)) is unbiased for Bernoulli steps
    square = float(np.mean(counts * (counts - 1))) / (counted * (counted - 1)) if counted > 1 else float(np.mean(rates)) ** 2
    return SimulatedMembrane(tuple(rates), float(np.mean(rates)), square, mean,
                             math.sqrt(max(total_sq / seen - mean**2, 0.0)))


@dataclass(frozen=True)
class SimulatedScale:
    """The input std :math:`s` (in units of the ``input_scales``) :func:`simulated_input_std` found, the held
    fraction of its variance it used, and the neurons simulated there (:class:`SimulatedMembrane`)."""

    input_std: float
    held_fraction: float
    membrane: SimulatedMembrane


@functools.lru_cache(maxsize=256)
def simulated_input_std(target_rate: float, dynamics: MembraneDynamics, steps: Optional[int] = None, *,
                        held_fraction: float = 0.0, input_scales: Optional[tuple[float, ...]] = None,
                        samples: int = SIMULATED_SAMPLES, seed: int = 0) -> SimulatedScale:
    r"""The input std :math:`s` at which the simulated firing probability (mean over ``steps`` steps, or
    stationary) is ``target_rate``: Brent's method on :math:`\log s` over a widened bracket, on common random
    numbers. ``input_scales``: per-neuron factors on :math:`s` (the neurons' input scalings λ for one weight
    scale); ``held_fraction``: of the input variance, held per neuron (:func:`simulate_membrane`).

    Raises:
        InitError: no input std reaches the target (naming the rate at the widest bracket).
    """
    threshold = float(np.mean(dynamics.threshold))
    scales = np.ones(1) if input_scales is None else np.asarray(input_scales, dtype=np.float64)

    def rate_at(s: float) -> float:
        return simulate_membrane(s * scales, dynamics, steps, held_fraction=held_fraction, samples=samples,
                                 seed=seed).rate

    low, high = _widened(rate_at, target_rate, threshold / float(scales.mean()), "spikeinit (simulated)")
    s = math.exp(optimize.brentq(lambda v: rate_at(math.exp(v)) - target_rate, math.log(low), math.log(high),
                                 xtol=1e-5))
    membrane = simulate_membrane(s * scales, dynamics, steps, held_fraction=held_fraction, samples=samples, seed=seed)
    return SimulatedScale(s, held_fraction, membrane)


# ----------------------------------------------------------------------------------------------------------
# Backward: the surrogate's shape (Theorem 5.1)
# ----------------------------------------------------------------------------------------------------------
def gradient_target(target_rate: float, kappa: float, weight_scale: float, input_scale: float,
                    steps: Optional[int] = None) -> float:
    r"""The :math:`E[h(y - \theta)^2]` that keeps the gradient norm from layer to layer (Theorem 5.1):

    .. math::
        G = \frac{1 - r}{(\sigma^*\lambda)^2} \ \text{(stationary)}, \qquad
        G = \frac{T}{(\sigma^*\lambda)^2\sum_{t<T}(1 - r^{t+1})/(1 - r)} \ \text{(over } T \text{ steps)},
        \qquad r = (1 - p)\,\kappa^2.

    Example:
        >>> from snn_initplug.stationary import gradient_target
        >>> round(gradient_target(0.1, kappa=0.5, weight_scale=5.1569, input_scale=0.5), 5)
        0.11657
    """
    ratio = (1.0 - target_rate) * kappa * kappa
    scale = (weight_scale * input_scale) ** 2
    if steps is None:
        return (1.0 - ratio) / scale
    accumulated = sum((1.0 - ratio ** (t + 1)) / (1.0 - ratio) if ratio < 1.0 else t + 1.0 for t in range(steps))
    return steps / (accumulated * scale)


SHAPE_RANGE = 1e4  # α* is searched within [α/1e4, α·1e4] of the surrogate's current shape


def surrogate_shape(family: Callable[[float], Callable], target: float, membrane: Normal, start: float) -> float:
    r"""The shape :math:`\alpha^*` with :math:`E_{x\sim D}[h_{\alpha^*}(x)^2] = G` (``target``), ``family(α)``
    the spike function of the surrogate family at shape α and :math:`D` = ``membrane`` the law of
    :math:`y - \theta`. The expectation is the adaptive quadrature of :func:`snn_initplug.surrogate_moments`
    through the family's own autograd. From the current shape ``start`` the search steps outwards by factors
    of 2, both ways, to the first sign change (the root nearest ``start`` in log α, within ×/÷1e4), then
    refines it by Brent's method in log α.

    Raises:
        InitError: no shape in that range reaches :math:`G` (naming the range of :math:`E[h^2]` found).
    """
    if not (math.isfinite(target) and target > 0):
        raise InitError(f"spikeinit: the gradient target E[h^2] = {target} is not positive and finite")
    if not (math.isfinite(start) and start > 0):
        start = 1.0

    def excess(log_alpha: float) -> float:
        m2 = surrogate_moments(family(math.exp(log_alpha)), membrane).m2
        return math.log(m2 / target) if m2 > 0 else -math.inf  # a surrogate that vanishes there

    centre, step = math.log(start), math.log(2.0)
    values = {centre: excess(centre)}
    bracket = None
    for k in range(1, math.ceil(math.log(SHAPE_RANGE) / step) + 1):
        for inner, outer in ((centre + (k - 1) * step, centre + k * step), (centre - (k - 1) * step, centre - k * step)):
            values[outer] = excess(outer)
            if values[inner] == 0.0:
                return math.exp(inner)
            if math.isfinite(values[outer]) and np.sign(values[inner]) != np.sign(values[outer]) \
                    and math.isfinite(values[inner]):
                bracket = (min(inner, outer), max(inner, outer))
                break
        if bracket is not None:
            break
    if bracket is None:
        finite = [math.exp(v) * target for v in values.values() if math.isfinite(v)]
        found = f"[{min(finite):.4g}, {max(finite):.4g}]" if finite else "0"
        raise InitError(f"spikeinit: no surrogate shape within ×/÷{SHAPE_RANGE:g} of the current {start:g} gives "
                        f"E[h(y-θ)^2] = {target:.4g} (it spans {found} there); pass surrogate=False to keep the "
                        "surrogate as it is")
    return math.exp(optimize.brentq(excess, *bracket, xtol=1e-12, rtol=1e-12))
