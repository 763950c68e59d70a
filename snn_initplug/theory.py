r"""The formulas behind each initializer: numbers in, numbers out (no tensors to fill, no model walking).

Notation (``shared/docs/theory.md``): a weight layer with ``fan_in`` inputs feeds neurons
:math:`u[t] = \beta u[t-1] + c\,I[t]`, :math:`s = H(u - \theta)`, impulse response sums
:math:`\Sigma K`, :math:`\Sigma K^2`, surrogate derivative :math:`h`.

* IKUN (Chang et al. 2024): :math:`\mathrm{Var}(W) = \kappa/\mathrm{fan}` with :math:`\kappa = 1/E_D[h^k]`.
  The released code uses :math:`h(u) = 1/(1+u^2)` on a 1000-point grid of [-1, 1]:
  :math:`\kappa_\mathrm{ref} = 1.27370\ldots` (:func:`ikun_reference_kappa`).
* Spike-aware (Micheli et al. 2024): :math:`\mathrm{Var}(W) = \sigma_u^2/(\mathrm{fan\_in}\; q_\mathrm{in}\,\Sigma K^2)`,
  :math:`q_\mathrm{in} = E[x_\mathrm{in}^2]` (for spikes the firing probability); hidden layers assume the
  self-consistent :math:`q = 1 - \Phi(\theta/\sigma_u)`. With one step and :math:`c = 1`, :math:`\Sigma K^2 = 1`:
  the paper's form, gain :math:`1/(1-\Phi(1)) = 6.30` at :math:`\theta = \sigma_u = 1`.
* Fluctuation-driven (Rossbroich et al. 2022), with input mean :math:`m` and second moment :math:`q`
  (both :math:`p` for spikes): :math:`\mu_w = \mu_U/(\mathrm{fan\_in}\; m\,\Sigma K)`,
  :math:`\sigma_w^2 = \sigma_U^2/(\mathrm{fan\_in}\; q\,\Sigma K^2) - \mu_w^2`; a recurrent population splits
  the variance budget, a fraction :math:`\alpha` (0.9) to the feed-forward input.
* Relay structure (ours, for depth): one strong input per neuron of weight :math:`g` plus a dense part of
  membrane std :math:`\sigma_d`; :math:`g` keeps the one-step firing probability at the input rate
  (:func:`relay_gain`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from scipy import special

from .errors import InitError

__all__ = [
    "InitError",
    "ikun_reference_kappa",
    "ikun_variance",
    "normal_cdf",
    "normal_quantile",
    "sigma_u_for_rate",
    "firing_probability",
    "spike_aware_variance",
    "relay_gain",
    "copy_window",
    "copy_gain",
    "FluctuationStats",
    "fluctuation_stats",
    "fan_for_mode",
]




def ikun_reference_kappa() -> float:
    """κ of IKUN's released code: 1 / mean of 1/(1+u²) over ``linspace(-1, 1, 1000)`` = 1.27370..."""
    u = np.linspace(-1.0, 1.0, 1000)
    return float(1.0 / np.mean(np.abs(1.0 / (1.0 + u * u))))


def fan_for_mode(fan_in: int, fan_out: int, mode: str) -> float:
    """``fan_in``, ``fan_out``, ``fan_avg`` = (fan_in + fan_out)/2, or ``fan_sum`` = fan_in + fan_out
    (IKUN v2 as released: without Glorot's factor 2)."""
    fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2, "fan_sum": fan_in + fan_out}
    if mode not in fans:
        raise InitError(f"mode must be one of {sorted(fans)}, got {mode!r}")
    if fans[mode] <= 0:
        raise InitError(f"{mode} is {fans[mode]}: a zero-element weight has no variance to set")
    return float(fans[mode])


def ikun_variance(fan: float, kappa: float) -> float:
    """Var(W) = κ / fan."""
    if not (math.isfinite(kappa) and kappa > 0):
        raise InitError(f"IKUN gain κ = {kappa} is not a positive finite number")
    return kappa / fan


def normal_cdf(x: float) -> float:
    return float(special.ndtr(x))


def normal_quantile(p: float) -> float:
    return float(special.ndtri(p))


def sigma_u_for_rate(threshold: float, rate: float) -> float:
    """σ_u such that P(u > θ) = rate for u ~ N(0, σ_u²): σ_u = θ / Φ⁻¹(1 − rate). Needs 0 < rate < 1/2."""
    if not 0.0 < rate < 0.5:
        raise InitError(f"target rate must lie in (0, 0.5) for a zero-mean membrane, got {rate}")
    return threshold / normal_quantile(1.0 - rate)


def firing_probability(threshold: float, sigma_u: float, mu_u: float = 0.0) -> float:
    """P(u > θ) for u ~ N(μ_u, σ_u²) = 1 − Φ((θ − μ_u)/σ_u)."""
    if not sigma_u > 0:
        raise InitError(f"sigma_u must be > 0, got {sigma_u}")
    return 1.0 - normal_cdf((threshold - mu_u) / sigma_u)


def spike_aware_variance(fan_in: float, sigma_u: float, input_second_moment: float, kernel_sq_sum: float = 1.0) -> float:
    """Var(W) = σ_u² / (fan_in · q_in · ΣK²)."""
    for name, value in (("input second moment", input_second_moment), ("kernel sum ΣK²", kernel_sq_sum)):
        if not (math.isfinite(value) and value > 0):
            raise InitError(f"spike-aware: {name} is {value}; it must be positive and finite (a silent input "
                            "cannot be scaled up to any membrane variance)")
    if not (math.isfinite(sigma_u) and sigma_u > 0):
        raise InitError(f"spike-aware: sigma_u must be positive and finite, got {sigma_u}")
    return sigma_u**2 / (fan_in * input_second_moment * kernel_sq_sum)


def _check_relay_inputs(sigma_dense: float, rate: float) -> None:
    if not 0.0 < rate < 1.0:
        raise InitError(f"relay: the input spike rate must lie in (0, 1), got {rate}")
    if not (math.isfinite(sigma_dense) and sigma_dense > 0):
        raise InitError(f"relay: the dense membrane std must be positive and finite, got {sigma_dense}")


def relay_gain(threshold: float, sigma_dense: float, rate: float) -> float:
    r"""Membrane jump :math:`g` of the relay path that keeps the firing probability at ``rate`` for one step.

    A neuron receives one strong "relay" input (a spike of probability :math:`p`) and a dense Gaussian
    input :math:`\xi \sim \mathcal{N}(0, \sigma_d^2)`: :math:`u = g\,s + \xi`. It fires with probability
    :math:`p\,\Phi((g - \theta)/\sigma_d) + (1 - p)(1 - \Phi(\theta/\sigma_d))`. Setting that to :math:`p`
    (relayed spikes lost = spikes the dense input creates):

    .. math:: g = \theta - \sigma_d\,\Phi^{-1}\!\left(\frac{(1-p)\,(1 - \Phi(\theta/\sigma_d))}{p}\right)

    Needs the dense input alone to fire less often than :math:`p/(1-p)`, i.e. a relay share large enough.
    """
    _check_relay_inputs(sigma_dense, rate)
    # in log space: for a small dense std, 1 − Φ(θ/σ_d) underflows and Φ⁻¹(0) would give an infinite weight
    log_lost = math.log1p(-rate) + float(special.log_ndtr(-threshold / sigma_dense)) - math.log(rate)
    if not log_lost < 0.0:
        raise InitError(f"relay: the dense input alone (std {sigma_dense:.3g}) fires more often than the rate "
                        f"{rate:.3g} can balance; raise relay= (move more variance into the relay path)")
    return threshold - sigma_dense * float(special.ndtri_exp(log_lost))


RELAY_SAMPLES = 100_000  # membrane trajectories simulated by relay_gain_over_steps (rate error ~ 5e-4)


def relay_rate_over_steps(gain: float, threshold: float, sigma_dense: float, rate: float, beta: float, steps: int,
                          reset: str = "subtract", reset_value: float = 0.0, samples: int = RELAY_SAMPLES,
                          seed: int = 0) -> float:
    r"""Firing probability, averaged over ``steps`` steps from rest, of the relay neuron of :func:`relay_gain`
    with its own dynamics: :math:`u_t = \beta u_{t-1} + g\,s_t + \xi_t`, relay spikes :math:`s_t` of
    probability :math:`p`, dense input :math:`\xi_t \sim \mathcal{N}(0, \sigma_d^2)`, independent across steps,
    a spike when :math:`u_t > \theta`, then the neuron's reset (``"subtract"`` θ, ``"hard"`` to ``reset_value``,
    ``"none"``). Simulated for ``samples`` trajectories from a seeded generator (the same draws at every call, so
    the rate changes with the gain alone)."""
    rng = np.random.default_rng(seed)
    u = np.zeros(samples)
    fired = 0
    for _ in range(steps):
        u = beta * u + gain * (rng.random(samples) < rate) + sigma_dense * rng.standard_normal(samples)
        spikes = u > threshold
        fired += int(spikes.sum())
        if reset == "subtract":
            u = u - threshold * spikes
        elif reset == "hard":
            u = np.where(spikes, reset_value, u)
    return fired / (samples * steps)


def relay_gain_over_steps(threshold: float, sigma_dense: float, rate: float, beta: float, steps: int,
                          reset: str = "subtract", reset_value: float = 0.0) -> float:
    r"""Relay jump :math:`g` that keeps the firing probability at ``rate`` over ``steps`` steps of the neuron's
    own dynamics (:func:`relay_rate_over_steps`), by bisection on :math:`g \in [0, 10\,\theta]` (the rate grows
    with :math:`g`). ``steps=1`` is :func:`relay_gain` (its closed form). Over several steps an integrating neuron
    keeps what a relayed spike left above the reset, so the one-step jump overdrives it (20-layer snnTorch stack,
    β = 0.9, T = 4: rates 0.23-0.50 instead of 0.16); this jump does not."""
    if steps == 1:
        return relay_gain(threshold, sigma_dense, rate)
    _check_relay_inputs(sigma_dense, rate)
    if not (0.0 <= beta <= 1.0) or steps < 1 or reset not in ("subtract", "hard", "none"):
        raise InitError(f"relay: needs 0 <= beta <= 1, steps >= 1 and a known reset, got beta={beta}, "
                        f"steps={steps}, reset={reset!r}")
    dynamics = (threshold, sigma_dense, rate, beta, steps, reset, reset_value)
    if relay_rate_over_steps(0.0, *dynamics) >= rate:
        raise InitError(f"relay: the dense input alone (std {sigma_dense:.3g}) fires at the rate {rate:.3g} or more "
                        f"over {steps} steps; raise relay= (move more variance into the relay path)")
    low, high = 0.0, 10.0 * threshold
    if relay_rate_over_steps(high, *dynamics) < rate:
        raise InitError(f"relay: no relay weight up to 10 θ reaches the rate {rate:.3g} over {steps} steps")
    for _ in range(40):
        middle = 0.5 * (low + high)
        if relay_rate_over_steps(middle, *dynamics) < rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# When a subtractive reset acts: at the next step, undecayed (u[t] = β u[t-1] + g s[t] − θ z[t-1], snnTorch), or
# right after the spike, decayed with the membrane (u[t] = β (u[t-1] − θ z[t-1]) + g s[t], SpikingJelly)
RESET_TIMINGS = ("next_step", "after_spike")

COPY_MARGIN = 0.02  # of θ above the smallest copying jump: float rounding and small learned inputs, not more
# (the copy's backward gain, about g·h(g − θ), is largest for a membrane just above θ)


def _leak_sum(beta: float, terms: Optional[int]) -> float:
    r""":math:`S_n = \sum_{j=0}^{n-1}\beta^j` (``terms`` = n), or :math:`1/(1-\beta)` for ``terms=None`` (n → ∞)."""
    if terms is None:
        return math.inf if beta >= 1.0 else 1.0 / (1.0 - beta)
    return float(terms) if beta == 1.0 else (1.0 - beta**terms) / (1.0 - beta)


def copy_window(threshold: float, beta: Union[float, tuple[float, float]], steps: Optional[int] = None,
                reset: str = "subtract", reset_value: float = 0.0,
                reset_timing: Optional[str] = None) -> tuple[float, float]:
    r"""The membrane jumps :math:`g` at which a neuron driven by one input alone copies it exactly: it spikes at
    step t if and only if the input spiked at step t, for every input spike train of ``steps`` steps from rest
    (``None``: of any length). Returns the open interval ``(low, high)``.

    The neuron :math:`u_t = \beta u_{t-1} + g s_t`, spike when :math:`u_t > \theta`. ``reset_timing`` says when
    a subtractive reset acts (:attr:`NeuronSpec.reset_timing <snn_initplug.NeuronSpec>`): ``"next_step"``
    subtracts θ at the next step, undecayed (:math:`u_t = \beta u_{t-1} + g s_t - \theta z_{t-1}`, snnTorch),
    ``"after_spike"`` right after the spike, decayed with the membrane
    (:math:`u_t = \beta(u_{t-1} - \theta z_{t-1}) + g s_t`, SpikingJelly); None (not known): the jumps that copy
    under both. With :math:`z = s` so far and
    :math:`S = S_{T-1} = \sum_{j=0}^{T-2}\beta^j`, the membrane on a spike step is at least, and on a quiet step at
    most (every earlier step a spike is the worst case):

    * ``"subtract"``, ``"next_step"``: :math:`g + (\beta g - \theta)S` when :math:`\beta g<\theta` (else
      :math:`g`), and :math:`(\beta g - \theta)S`, so :math:`\theta\,\frac{1+S}{1+\beta S} < g <
      \frac{\theta}{\beta}\left(1+\frac1S\right)`; ``"after_spike"``: :math:`g` and :math:`\beta S (g - \theta)`,
      so :math:`\theta < g < \theta + \frac{\theta}{\beta S}`; None: the lower end of the first, the smaller upper
      end. For T → ∞ both upper ends are :math:`\theta/\beta`, and None gives :math:`(2-\beta)\,\theta < g <
      \theta/\beta`.
    * ``"hard"`` to :math:`r` (:math:`r < \theta`): after a spike the membrane starts again from :math:`r` (or
      :math:`\beta r`): :math:`\theta - \min(0, r) < g`, no upper end.
    * ``"none"``: every input stays in the membrane: :math:`\theta < g < \theta/(\beta S)`, empty unless
      :math:`\beta S < 1` (a short train, or :math:`\beta < 1/2` for any length).

    ``steps=1`` (one step from rest): :math:`\theta < g` for every reset.

    ``beta`` = (smallest, largest) for per-neuron decays: both ends of the window fall as β grows, so the jumps that
    copy for every decay in between are (low at the smallest, high at the largest).

    Raises:
        InitError: an empty window (the neuron cannot copy), or a decay outside [0, 1].

    Example:
        >>> import snn_initplug.theory as th
        >>> [round(v, 4) for v in th.copy_window(1.0, beta=0.9, steps=4)]  # reset timing not known: both
        [1.0788, 1.41]
        >>> [round(v, 4) for v in th.copy_window(1.0, beta=0.9, steps=4, reset_timing="after_spike")]
        [1.0, 1.41]
    """
    if isinstance(beta, tuple):
        smallest, largest = beta
        low, high = copy_window(threshold, smallest, steps, reset, reset_value, reset_timing)[0], \
            copy_window(threshold, largest, steps, reset, reset_value, reset_timing)[1]
        if not low < high:
            span = "any number of steps" if steps is None else f"{steps} steps"
            raise InitError(f"copy relay: per-neuron decays from {smallest:g} to {largest:g} have no common jump that "
                            f"copies over {span} (needs {low:.4g} < g < {high:.4g}); give steps=T (the steps "
                            "simulated), or use relay < 1")
        return low, high
    if not (math.isfinite(threshold) and threshold > 0):
        raise InitError(f"copy relay: the threshold must be positive and finite, got {threshold}")
    if not 0.0 <= beta <= 1.0:
        raise InitError(f"copy relay: needs a decay 0 <= beta <= 1, got beta={beta}")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise InitError(f"copy relay: steps must be a positive whole number or None, got {steps!r}")
    if reset_timing is not None and reset_timing not in RESET_TIMINGS:
        raise InitError(f"copy relay: reset_timing must be one of {RESET_TIMINGS} or None, got {reset_timing!r}")
    past = _leak_sum(beta, None if steps is None else int(steps) - 1)  # S_{T-1}: the steps before the last
    if past == 0.0:  # one step from rest: the input alone decides
        low, high = threshold, math.inf
    elif reset == "subtract":
        low, high = _subtractive_copy_window(threshold, beta, past, reset_timing)
    elif reset == "hard":
        if not reset_value < threshold:
            raise InitError(f"copy relay: a hard reset to {reset_value} at or above θ = {threshold} fires again")
        low, high = threshold - min(0.0, reset_value), math.inf
    elif reset == "none":
        low, high = threshold, (math.inf if beta == 0.0 else threshold / (beta * past))
    else:
        raise InitError(f"copy relay: unknown reset {reset!r}")
    if not low < high:
        span = "any number of steps" if steps is None else f"{steps} steps"
        raise InitError(f"copy relay: a neuron with decay {beta:g} and reset {reset!r} cannot copy its input over "
                        f"{span} (no jump g spikes on every input spike and on no other step: needs "
                        f"{low:.4g} < g < {high:.4g}); give steps=T if the trains are T steps long, or use "
                        "relay < 1")
    return low, high


def _subtractive_copy_window(threshold: float, beta: float, past: float,
                             reset_timing: Optional[str]) -> tuple[float, float]:
    """:func:`copy_window` of a subtractive reset, ``past`` = :math:`S` > 0 (infinite for β = 1 and any length)."""
    if reset_timing == "after_spike":
        return threshold, (math.inf if beta == 0.0 else threshold + threshold / (beta * past))
    low = threshold * (1.0 + past) / (1.0 + beta * past) if math.isfinite(past) else threshold * (2.0 - beta)
    high = math.inf if beta == 0.0 else threshold / beta * (1.0 + 1.0 / past)
    if reset_timing is None and beta > 0.0:  # not known: the jumps that copy under both timings
        high = min(high, threshold + threshold / (beta * past))
    return low, high


def copy_gain(threshold: float, beta: Union[float, tuple[float, float]], steps: Optional[int] = None,
              reset: str = "subtract", reset_value: float = 0.0, margin: float = COPY_MARGIN,
              reset_timing: Optional[str] = None) -> float:
    r"""The relay jump of ``relay=1``: :math:`g = \min(g_\mathrm{low} + m\,\theta,\ (g_\mathrm{low} +
    g_\mathrm{high})/2)` in the window of :func:`copy_window`, ``margin`` :math:`m` (0.02) above its lower end,
    or its middle when the window is narrower.

    Why so low: the surrogate gradient of the copy path, about :math:`g\,h(u - \theta)` per layer with
    :math:`u \approx g` on a spike, is largest for a membrane just above θ (``docs/depth.md``).

    Example:
        >>> import snn_initplug.theory as th
        >>> round(th.copy_gain(1.0, beta=0.9), 4), round(th.copy_gain(1.0, beta=0.9, steps=4), 4)
        (1.1056, 1.0988)
    """
    low, high = copy_window(threshold, beta, steps, reset, reset_value, reset_timing)
    return min(low + margin * threshold, 0.5 * (low + high))


@dataclass(frozen=True)
class FluctuationStats:
    mean: float
    std: float


def fluctuation_stats(
    fan_in: float,
    input_mean: float,
    input_second_moment: float,
    kernel_sum: float,
    kernel_sq_sum: float,
    mu_u: float = 0.0,
    sigma_u: float = 1.0,
    variance_share: float = 1.0,
    total_drive: Optional[float] = None,
) -> FluctuationStats:
    """Weight mean and std that put the free membrane at mean μ_U and standard deviation σ_U.

    μ_w = μ_U / (D · ΣK) with the total drive D = fan_in · m (or ``total_drive`` when several populations
    feed the neuron, e.g. feed-forward plus recurrent), σ_w² = share · σ_U² / (fan_in · q · ΣK²) − μ_w².
    """
    values = {"input mean": input_mean, "input second moment": input_second_moment, "ΣK": kernel_sum, "ΣK²": kernel_sq_sum}
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise InitError(f"fluctuation-driven: {name} is {value}; it must be positive and finite")
    if not (math.isfinite(sigma_u) and sigma_u > 0) or not math.isfinite(mu_u):
        raise InitError(f"fluctuation-driven: need finite mu_u and sigma_u > 0, got mu_u={mu_u}, sigma_u={sigma_u}")
    drive = fan_in * input_mean if total_drive is None else total_drive
    mean = mu_u / (drive * kernel_sum)
    variance = variance_share * sigma_u**2 / (fan_in * input_second_moment * kernel_sq_sum) - mean**2
    if not variance > 0:
        raise InitError(
            f"fluctuation-driven: the requested statistics are impossible: σ_w² = {variance:.3g} ≤ 0 "
            f"(μ_U = {mu_u}, σ_U = {sigma_u}, fan_in = {fan_in}, input mean {input_mean:.3g}, second moment "
            f"{input_second_moment:.3g}); lower |μ_U| or raise σ_U"
        )
    return FluctuationStats(mean, math.sqrt(variance))
