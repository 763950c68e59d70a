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
from .errors import InitError, OptionError

__all__ = [
    "Law",
    "membrane_target",
    "ikun_law",
    "spike_aware_law",
    "fluctuation_law",
    "baseline_law",
    "calculate_relay",
    "check_relay",
    "BASELINES",
]


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


def membrane_target(threshold: float, *, sigma_u: Optional[float] = None, rate: Optional[float] = None,
                    mu_u: float = 0.0) -> float:
    r""":math:`\sigma_U`: ``sigma_u`` when given, :math:`(\theta-\mu_U)/\Phi^{-1}(1-r)` for a target ``rate``
    (then :math:`P(u > \theta) = r` for :math:`u \sim \mathcal{N}(\mu_U, \sigma_U^2)`), else :math:`\theta - \mu_U`."""
    if sigma_u is not None and rate is not None:
        raise InitError("give the target as sigma_u= or as rate=, not both")
    if sigma_u is not None:
        return float(sigma_u)
    distance = threshold - mu_u
    if not distance > 0:  # both other targets are measured from the threshold gap
        raise InitError(f"the membrane mean mu_u = {mu_u} is not below the threshold {threshold}; give sigma_u=")
    return distance if rate is None else theory.sigma_u_for_rate(distance, float(rate))


def ikun_law(fan_in: int, fan_out: int, kappa: float, *, mode: str = "fan_in") -> Law:
    r"""IKUN: :math:`\mathcal{N}(0, \kappa/\mathrm{fan})`, ``fan`` by ``mode`` (``fan_in``, ``fan_out``,
    ``fan_avg``, ``fan_sum``; see :func:`snn_initplug.theory.fan_for_mode`)."""
    fan = theory.fan_for_mode(fan_in, fan_out, mode)
    return Law("normal", 0.0, math.sqrt(theory.ikun_variance(fan, kappa)))


def spike_aware_law(fan_in: int, threshold: float, sigma_u: float, input_second_moment: float,
                    kernel_sq_sum: float = 1.0, *, share: float = 1.0, relay: float = 0.0,
                    input_scale: float = 1.0) -> Law:
    r"""Spike-aware (Micheli et al. 2024): :math:`\mathcal{N}(0, s\,\sigma_u^2/(\mathrm{fan\_in}\,q\,\Sigma K^2))`.

    ``share`` :math:`s` is the fraction of the membrane variance this weight provides (several layers summed
    into one neuron split it). ``relay`` :math:`\rho > 0` (spike inputs of probability :math:`q` only) keeps
    :math:`1-\rho` of the variance random and adds a one-to-one relay path (:func:`calculate_relay`, with the
    neuron's input scaling ``input_scale``).
    """
    std = math.sqrt(theory.spike_aware_variance(1.0, sigma_u, input_second_moment, kernel_sq_sum) * share / fan_in)
    if not relay:
        return Law("normal", 0.0, std)
    dense, weight = calculate_relay(relay, std, fan_in, threshold, input_second_moment, input_scale)
    return Law("normal", 0.0, dense, weight)


def fluctuation_law(fan_in: int, input_mean: float, input_second_moment: float, kernel_sum: float,
                    kernel_sq_sum: float, *, mu_u: float = 0.0, sigma_u: float = 1.0, share: float = 1.0,
                    total_drive: Optional[float] = None) -> Law:
    r"""Fluctuation-driven (Rossbroich et al. 2022): :math:`\mathcal{N}(\mu_w, \sigma_w^2)` with
    :math:`\mu_w = \mu_U/(D\,\Sigma K)`, :math:`\sigma_w^2 = s\,\sigma_U^2/(\mathrm{fan\_in}\,q\,\Sigma K^2) - \mu_w^2`,
    the total drive :math:`D = \mathrm{fan\_in}\cdot m` (or ``total_drive`` when several populations feed the
    neuron) and the variance share :math:`s`."""
    stats = theory.fluctuation_stats(fan_in, input_mean, input_second_moment, kernel_sum, kernel_sq_sum, mu_u,
                                     sigma_u, share, total_drive)
    return Law("normal", stats.mean, stats.std)


BASELINES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
             "spikingjelly")


def baseline_law(name: str, fan_in: int, fan_out: int) -> Law:
    """The baselines used for comparison:

    ==================  ===========================================================
    ``default``         PyTorch's Linear/Conv default: U(±1/√fan_in) (``kaiming_uniform_(a=√5)``)
    ``kaiming_normal``  N(0, 2/fan_in) (ReLU gain)
    ``kaiming_uniform`` U(±√(6/fan_in))
    ``xavier_normal``   N(0, 2/(fan_in + fan_out))
    ``xavier_uniform``  U(±√(6/(fan_in + fan_out)))
    ``lecun_normal``    N(0, 1/fan_in)
    ``spikingjelly``    SpikingJelly's ``kaiming_normal_conv_linear_weight``: N(0, 1/(3 fan_in))
    ==================  ===========================================================
    """
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
    }
    if name not in table:
        raise InitError(f"unknown baseline {name!r}; choose from {sorted(table)}")
    kind, std = table[name]
    return Law(kind, 0.0, std)


def check_relay(relay) -> float:
    """``relay`` as a float in [0, 1), or an :class:`~snn_initplug.errors.OptionError`."""
    try:
        value = float(relay)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"relay must be a number in [0, 1), got {relay!r}") from exc
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise OptionError(f"relay must be a number in [0, 1), got {relay!r}")
    return value


def calculate_relay(relay: float, dense_std: float, fan_in: int, threshold: float, input_rate: float,
                    input_scale: float = 1.0) -> tuple[float, float]:
    r"""(dense std, relay weight) of a relay-structured layer: :math:`W = g\,P + \sqrt{1-\rho}\;\sigma_w Z`.

    ``relay`` :math:`\rho \in [0, 1)` moves that fraction of the law's variance out of the dense random part;
    each output unit instead receives one strong input (:func:`snn_initplug.init.relay_pattern`) whose weight
    :math:`g/c` (:math:`c` = ``input_scale``, the neuron's input scaling) keeps the firing probability at the
    input rate :math:`p` for one step (:func:`snn_initplug.theory.relay_gain` with the dense membrane std
    :math:`\sigma_d = c\sqrt{1-\rho}\,\sigma_w\sqrt{\mathrm{fan\_in}\,p}`).

    Why: threshold units with dense random weights are chaotic, so the class information of the input fades
    within a few layers even when every layer fires at its target; a dominant one-to-one path carries it
    through depth (measured in ``benchmarks/deep_mnist.py``).
    """
    relay = check_relay(relay)
    dense = dense_std * math.sqrt(1.0 - relay)
    if relay == 0.0:
        return dense, 0.0
    sigma_dense = input_scale * dense * math.sqrt(fan_in * input_rate)
    return dense, theory.relay_gain(threshold, sigma_dense, input_rate) / input_scale
