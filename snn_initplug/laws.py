r"""One law function per method: the layer's numbers in, a weight :class:`Law` out.

Both paths call these and nothing else computes a law: the tensor functions of :mod:`snn_initplug.init`
(``ikun_``, ``spike_aware_``, ...) take the numbers from their arguments and the tensor's fans; the model
rules of :mod:`snn_initplug.apply` take them from a layer's plan (its fans, its neuron's threshold and kernel
sums, its measured input statistics). So one seed gives the same weights through both.

Notation as in :mod:`snn_initplug.theory`: ``fan_in`` inputs of second moment :math:`q` and mean :math:`m`
feed neurons of threshold :math:`\theta` and impulse-response sums :math:`\Sigma K`, :math:`\Sigma K^2`.

The membrane target (:func:`membrane_target`), shared by spike-aware and fluctuation-driven init: a membrane
of mean :math:`\mu_U` (0 for spike-aware) and standard deviation

.. math:: \sigma_U = \theta - \mu_U \quad\text{(default)}, \qquad
          \sigma_U = (\theta - \mu_U)/\Phi^{-1}(1 - r) \quad\text{(a target rate } r\text{)}, \quad
          \text{or } \sigma_U \text{ given.}

The default puts the threshold one standard deviation above the mean membrane: Rossbroich et al. (2022)
parametrize the fluctuation-driven regime by :math:`\xi = (\theta - \mu_U)/\sigma_U`, a distance measured
in units of the threshold gap (their code sets :math:`\sigma_U = (\theta - \mu_U)/\xi` with :math:`\theta = 1`),
and :math:`\xi = 1` is Micheli et al.'s :math:`\sigma_u = \theta` at :math:`\mu_U = 0`. A fixed
:math:`\sigma_U = 1` would make the regime depend on the units of the threshold (at :math:`\theta = 2` it is
:math:`\xi = 2`, a neuron four times quieter).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from . import theory
from .deprecation import renamed_arguments
from .errors import InitError, OptionError

__all__ = [
    "Law",
    "membrane_target",
    "ikun_law",
    "spike_aware_law",
    "fluctuation_law",
    "baseline_law",
    "spikeinit_law",
    "calculate_relay",
    "check_relay",
    "RelayDynamics",
    "BASELINES",
]


@dataclass(frozen=True)
class RelayDynamics:
    """The neuron the relay path feeds, over the steps its weight should hold the rate for: membrane decay
    ``beta``, ``steps`` (1: the one-step closed form of :func:`snn_initplug.theory.relay_gain`; None: any
    number, for the copy relay ``relay=1`` only), the ``reset`` (``"subtract"``, ``"hard"`` to
    ``reset_value``, ``"none"``); ``beta_range`` (smallest, largest) for per-neuron decays, where the copy relay
    needs a jump that copies for all of them (:func:`snn_initplug.theory.copy_window`); ``reset_timing``, when a
    subtractive reset acts (:attr:`snn_initplug.NeuronSpec.reset_timing`; None: not known)."""

    beta: float = 1.0
    steps: Optional[int] = 1
    reset: str = "subtract"
    reset_value: float = 0.0
    beta_range: Optional[tuple[float, float]] = None  # per-neuron decays (smallest, largest): the copy relay's window
    reset_timing: Optional[str] = None


@dataclass(frozen=True)
class Law:
    """A weight distribution: ``normal`` (mean, std) or ``uniform`` on [mean − bound, mean + bound], plus
    ``relay`` added at the positions of :func:`snn_initplug.init.relay_pattern` (0: none)."""

    kind: str
    mean: float
    std: float
    relay: float = 0.0

    @property
    def bound(self) -> float:
        return self.std * math.sqrt(3.0)  # the half-width of a uniform law with this std

    @property
    def is_copy(self) -> bool:
        """The copy relay's law (``relay=1``): the relay pattern alone, no random part."""
        return self.std == 0 and self.relay > 0


@renamed_arguments(rate="target_rate")
def membrane_target(threshold: float, *, sigma_u: Optional[float] = None, target_rate: Optional[float] = None,
                    mu_u: float = 0.0) -> float:
    r"""The membrane standard deviation :math:`\sigma_U` that spike-aware and fluctuation-driven init aim at.

    .. math::
        \sigma_U = \theta - \mu_U \ \text{(default)}, \qquad
        \sigma_U = \frac{\theta - \mu_U}{\Phi^{-1}(1 - r)} \ \text{(target rate } r\text{)}, \qquad
        \text{or } \sigma_U \text{ as given,}

    so that with a target rate :math:`P(u > \theta) = r` for :math:`u \sim \mathcal{N}(\mu_U, \sigma_U^2)`.

    Args:
        threshold: the firing threshold :math:`\theta`.
        sigma_u: the target itself (then ``target_rate`` must be None).
        target_rate: a target firing probability :math:`r` per step, in (0, 0.5] (``rate=``: deprecated).
        mu_u: the mean membrane :math:`\mu_U`, below the threshold.

    Returns:
        float: :math:`\sigma_U`.

    Raises:
        InitError: both ``sigma_u`` and ``target_rate`` given, or ``mu_u`` not below the threshold.

    Example:
        >>> import snn_initplug as sip
        >>> sip.laws.membrane_target(1.0)  # one threshold gap
        1.0
        >>> sip.laws.membrane_target(1.0, target_rate=0.1)  # 10% of the neurons above threshold
        0.7803
    """
    if sigma_u is not None and target_rate is not None:
        raise InitError("give the target as sigma_u= or as target_rate=, not both")
    if sigma_u is not None:
        return float(sigma_u)
    distance = threshold - mu_u
    if not distance > 0:  # both other targets are measured from the threshold gap
        raise InitError(f"the membrane mean mu_u = {mu_u} is not below the threshold {threshold}; give sigma_u=")
    return distance if target_rate is None else theory.sigma_u_for_rate(distance, float(target_rate))


@renamed_arguments(mode="fan_mode")
def ikun_law(fan_in: int, fan_out: int, kappa: float, *, fan_mode: str = "fan_in") -> Law:
    r"""IKUN's law (Chang et al. 2024): :math:`\mathcal{N}(0, \kappa/\mathrm{fan})`.

    Args:
        fan_in: inputs per output unit.
        fan_out: outputs per input unit.
        kappa: IKUN's gain :math:`\kappa` (:func:`snn_initplug.calculate_ikun_gain`).
        fan_mode: the fan that divides the variance (``mode=``: deprecated): ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` (their mean) or
            ``"fan_sum"`` (their sum, the released v2).

    Returns:
        Law: normal, mean 0, std :math:`\sqrt{\kappa/\mathrm{fan}}`.

    Example:
        >>> import snn_initplug as sip
        >>> sip.laws.ikun_law(784, 256, kappa=2.0)
        Law(kind='normal', mean=0.0, std=0.0505, relay=0.0)
    """
    fan = theory.fan_for_mode(fan_in, fan_out, fan_mode)
    return Law("normal", 0.0, math.sqrt(theory.ikun_variance(fan, kappa)))


def spike_aware_law(fan_in: int, threshold: float, sigma_u: float, input_second_moment: float,
                    kernel_sq_sum: float = 1.0, *, share: float = 1.0, relay: float = 0.0,
                    input_scale: float = 1.0, relay_dynamics: Optional[RelayDynamics] = None) -> Law:
    r"""Spike-aware law (Micheli et al. 2024): the weights that give the membrane the standard deviation
    :math:`\sigma_u` when ``fan_in`` inputs of second moment :math:`q` arrive through the kernel :math:`K`,

    .. math::
        W \sim \mathcal{N}\Big(0,\ \frac{s\,\sigma_u^2}{\mathrm{fan\_in}\; q\; \Sigma K^2}\Big).

    ``share`` :math:`s` is the fraction of the membrane variance this weight provides (several layers summed
    into one neuron split it). ``relay`` :math:`\rho > 0` (spike inputs of probability :math:`q` only) keeps
    :math:`1-\rho` of the variance random and adds a one-to-one relay path (:func:`calculate_relay`, with the
    neuron's input scaling ``input_scale``).

    Args:
        fan_in: inputs per output unit.
        threshold: the firing threshold :math:`\theta` (used by the relay weight).
        sigma_u: the membrane target :math:`\sigma_u` (:func:`membrane_target`).
        input_second_moment: :math:`q = E[x^2]` of the input (the rate, for spikes).
        kernel_sq_sum: :math:`\Sigma K^2` of the neuron over the horizon the variance should hold at.
        share: :math:`s`, in (0, 1].
        relay: :math:`\rho` in [0, 1] (1: the copy relay, :func:`calculate_relay`).
        input_scale: the neuron's input scaling :math:`c`.
        relay_dynamics: the neuron's leak, reset and steps for the relay weight (default: one step).

    Returns:
        Law: normal, mean 0, the std above (times :math:`\sqrt{1-\rho}`), and the relay weight.

    Example:
        >>> import snn_initplug as sip
        >>> sip.laws.spike_aware_law(784, threshold=1.0, sigma_u=1.0, input_second_moment=0.1)
        Law(kind='normal', mean=0.0, std=0.1129, relay=0.0)
    """
    std = math.sqrt(theory.spike_aware_variance(1.0, sigma_u, input_second_moment, kernel_sq_sum) * share / fan_in)
    if not relay:
        return Law("normal", 0.0, std)
    dense, weight = calculate_relay(relay, std, fan_in, threshold, input_second_moment, input_scale, relay_dynamics)
    return Law("normal", 0.0, dense, weight)


def fluctuation_law(fan_in: int, input_mean: float, input_second_moment: float, kernel_sum: float,
                    kernel_sq_sum: float, *, mu_u: float = 0.0, sigma_u: float = 1.0, share: float = 1.0,
                    total_drive: Optional[float] = None) -> Law:
    r"""Fluctuation-driven law (Rossbroich et al. 2022): :math:`\mathcal{N}(\mu_w, \sigma_w^2)` with

    .. math::
        \mu_w = \frac{\mu_U}{D\,\Sigma K}, \qquad
        \sigma_w^2 = \frac{s\,\sigma_U^2}{\mathrm{fan\_in}\; q\; \Sigma K^2} - \mu_w^2,

    the total drive :math:`D = \mathrm{fan\_in}\cdot m` (or ``total_drive`` when several populations feed the
    neuron) and the variance share :math:`s`.

    Args:
        fan_in: inputs per output unit.
        input_mean: :math:`m = E[x]` of the input (the rate, for spikes).
        input_second_moment: :math:`q = E[x^2]` of the input (the rate, for spikes).
        kernel_sum: :math:`\Sigma K` of the neuron's impulse response.
        kernel_sq_sum: :math:`\Sigma K^2` of the neuron's impulse response.
        mu_u: the target membrane mean :math:`\mu_U`.
        sigma_u: the target membrane standard deviation :math:`\sigma_U`.
        share: :math:`s`, in (0, 1].
        total_drive: :math:`D` when several populations feed the neuron.

    Returns:
        Law: normal with mean :math:`\mu_w` and std :math:`\sigma_w`.

    Example:
        A LIF neuron with β = 0.9 (:math:`\Sigma K = 10`, :math:`\Sigma K^2 = 1/(1-0.81)`), inputs spiking at 10%:

        >>> import snn_initplug as sip
        >>> sip.laws.fluctuation_law(784, 0.1, 0.1, 10.0, 1 / 0.19, mu_u=0.0, sigma_u=1.0)
        Law(kind='normal', mean=0.0, std=0.0492, relay=0.0)
    """
    stats = theory.fluctuation_stats(fan_in, input_mean, input_second_moment, kernel_sum, kernel_sq_sum, mu_u,
                                     sigma_u, share, total_drive)
    return Law("normal", stats.mean, stats.std)


def spikeinit_law(fan_in: int, weight_scale: float, *, share: float = 1.0) -> Law:
    r"""SpikeInit's law (Shi & Yu 2026): :math:`\mathcal{N}(0, s\,\sigma^{*2}/\mathrm{fan\_in})` with the weight
    scale :math:`\sigma^*` of :func:`snn_initplug.calculate_spikeinit` and the variance share :math:`s` of this
    weight among the layers summed into one neuron.

    Example:
        >>> import snn_initplug.laws as laws
        >>> laws.spikeinit_law(100, 5.157)
        Law(kind='normal', mean=0.0, std=0.5157, relay=0.0)
    """
    if fan_in <= 0:
        raise InitError(f"zero fan_in ({fan_in}): nothing to initialize")
    if not (math.isfinite(weight_scale) and weight_scale > 0):
        raise InitError(f"spikeinit: the weight scale {weight_scale} is not positive and finite")
    return Law("normal", 0.0, weight_scale * math.sqrt(share / fan_in))


BASELINES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
             "spikingjelly", "ding")


def baseline_law(name: str, fan_in: int, fan_out: int, *, threshold: float = 1.0, input_scale: float = 1.0) -> Law:
    """The law of a baseline initializer, one of:

    ===================  ===========================================================
    ``default``          PyTorch's Linear/Conv default: U(±1/√fan_in) (``kaiming_uniform_(a=√5)``)
    ``kaiming_normal``   N(0, 2/fan_in) (ReLU gain)
    ``kaiming_uniform``  U(±√(6/fan_in))
    ``xavier_normal``    N(0, 2/(fan_in + fan_out))
    ``xavier_uniform``   U(±√(6/(fan_in + fan_out)))
    ``lecun_normal``     N(0, 1/fan_in)
    ``spikingjelly``     SpikingJelly's ``kaiming_normal_conv_linear_weight``: N(0, 1/(3 fan_in))
    ``ding``             Ding et al. 2025 (SpikeInit's ablation): N(0, 2 θ²/(λ² fan_in))
    ===================  ===========================================================

    Args:
        name: the baseline's name, from the table.
        fan_in: inputs per output unit.
        fan_out: outputs per input unit.
        threshold: the neuron's threshold θ (``ding`` only).
        input_scale: the neuron's input scaling λ (``ding`` only; 1/τ for SpikingJelly's ``decay_input=True``).

    Returns:
        Law: normal, or uniform (its std is the half-width over √3).

    Example:
        >>> import snn_initplug as sip
        >>> sip.laws.baseline_law("kaiming_normal", 784, 256)
        Law(kind='normal', mean=0.0, std=0.0505, relay=0.0)
    """
    if not isinstance(name, str):
        raise OptionError(f"baseline: name must be a baseline's name (a str), got {type(name).__name__}")
    if fan_in <= 0 or fan_out <= 0:
        raise InitError(f"zero fan (fan_in={fan_in}, fan_out={fan_out}): nothing to initialize")
    table = {
        "default": ("uniform", 1.0 / math.sqrt(3 * fan_in)),
        "kaiming_normal": ("normal", math.sqrt(2.0 / fan_in)),
        "kaiming_uniform": ("uniform", math.sqrt(2.0 / fan_in)),
        "xavier_normal": ("normal", math.sqrt(2.0 / (fan_in + fan_out))),
        "xavier_uniform": ("uniform", math.sqrt(2.0 / (fan_in + fan_out))),
        "lecun_normal": ("normal", math.sqrt(1.0 / fan_in)),
        "spikingjelly": ("normal", math.sqrt(1.0 / (3 * fan_in))),
        "ding": ("normal", math.sqrt(2.0) * threshold / input_scale / math.sqrt(fan_in)),
    }
    if name not in table:
        raise InitError(f"unknown baseline {name!r}; choose from {sorted(table)}")
    kind, std = table[name]
    return Law(kind, 0.0, std)


def check_relay(relay) -> float:
    """``relay`` as a float in [0, 1] (1: the copy relay), or an :class:`~snn_initplug.errors.OptionError`."""
    try:
        value = float(relay)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"relay must be a number in [0, 1], got {relay!r}") from exc
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise OptionError(f"relay must be a number in [0, 1], got {relay!r}")
    return value


def calculate_relay(relay: float, dense_std: float, fan_in: int, threshold: float, input_rate: float,
                    input_scale: float = 1.0, dynamics: Optional[RelayDynamics] = None) -> tuple[float, float]:
    r"""(dense std, relay weight) of a relay-structured layer: :math:`W = g\,P + \sqrt{1-\rho}\;\sigma_w Z`.

    ``relay`` :math:`\rho \in [0, 1]` moves that fraction of the law's variance out of the dense random part;
    each output unit instead receives one strong input (:func:`snn_initplug.init.relay_pattern`) whose weight
    :math:`g/c` (:math:`c` = ``input_scale``, the neuron's input scaling) keeps the firing probability at the
    input rate :math:`p` for one step (:func:`snn_initplug.theory.relay_gain` with the dense membrane std
    :math:`\sigma_d = c\sqrt{1-\rho}\,\sigma_w\sqrt{\mathrm{fan\_in}\,p}`), or over ``dynamics.steps`` steps of
    the neuron's own leak and reset (:func:`snn_initplug.theory.relay_gain_over_steps`).

    ``relay=1`` is the copy relay :math:`W = g\,P`: no dense part, and :math:`g/c` with :math:`g` from
    :func:`snn_initplug.theory.copy_gain` (``dynamics``: the neuron's leak and reset, over ``dynamics.steps``
    steps or, for None, any number), so that each neuron spikes exactly when its relayed input does. A stack of
    such layers passes its first layer's spike trains unchanged to the last: at init it computes what the
    two-layer network computes, and the dense weights start at 0 and are learned (``docs/depth.md``).

    Why: threshold units with dense random weights are chaotic, so the class information of the input fades
    within a few layers even when every layer fires at its target; a dominant one-to-one path carries it
    through depth (measured in ``benchmarks/deep_mnist.py``).

    Args:
        relay: :math:`\rho` in [0, 1].
        dense_std: :math:`\sigma_w`, the std of the law without relay.
        fan_in: inputs per output unit.
        threshold: the firing threshold :math:`\theta`.
        input_rate: the input's spike probability :math:`p`.
        input_scale: the neuron's input scaling :math:`c`.
        dynamics: the neuron's leak, reset and the steps the rate should hold over (default: one step).

    Returns:
        tuple[float, float]: the std of the dense part and the relay weight (0 when ``relay`` is 0).

    Example:
        >>> import snn_initplug as sip
        >>> dense, weight = sip.calculate_relay(0.9, dense_std=0.1, fan_in=512, threshold=1.0, input_rate=0.16)
        >>> round(dense, 4), round(weight, 3)
        (0.0316, 1.865)
    """
    relay = check_relay(relay)
    dense = dense_std * math.sqrt(1.0 - relay)
    if relay == 0.0:
        return dense, 0.0
    if relay == 1.0:
        dynamics = dynamics or RelayDynamics()
        return 0.0, theory.copy_gain(threshold, dynamics.beta_range or dynamics.beta, dynamics.steps, dynamics.reset,
                                     dynamics.reset_value, reset_timing=dynamics.reset_timing) / input_scale
    sigma_dense = input_scale * dense * math.sqrt(fan_in * input_rate)
    if dynamics is None or dynamics.steps in (None, 1):
        return dense, theory.relay_gain(threshold, sigma_dense, input_rate) / input_scale
    gain = theory.relay_gain_over_steps(threshold, sigma_dense, input_rate, dynamics.beta, dynamics.steps,
                                        dynamics.reset, dynamics.reset_value)
    return dense, gain / input_scale
