r"""Tensor-level initializers in the style of ``torch.nn.init``.

Each function fills a tensor in place (name ending in ``_``) and returns it, takes ``generator=`` for
reproducibility, and has a ``calculate_*`` companion that returns the numbers without touching a tensor.
Samples are drawn on the CPU (float64 for float64 tensors, float32 otherwise) and then copied to the tensor's
device and dtype, so one seed gives the same weights on CPU and CUDA and in every floating dtype.

Fans follow PyTorch: ``fan_in = in_features`` or ``in_channels/groups · prod(kernel)``, ``fan_out`` likewise.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from . import theory
from .surrogate import Distribution, Uniform, describe_surrogate, surrogate_derivative, surrogate_moments
from .theory import InitError

__all__ = [
    "Law",
    "sample",
    "calculate_fans",
    "calculate_ikun_gain",
    "ikun_",
    "calculate_spike_aware_gain",
    "spike_aware_",
    "relay_pattern",
    "calculate_relay",
    "check_relay",
    "calculate_fluctuation",
    "fluctuation_",
    "baseline_law",
    "baseline_",
    "BASELINES",
]

KAPPA_TYPICAL = (1.0, 3.0)  # the range of κ for the common unit-area surrogates on Uniform(-1, 1)


@dataclass(frozen=True)
class Law:
    """A weight distribution: ``normal`` (mean, std) or ``uniform`` on [mean − bound, mean + bound], plus
    ``relay`` added at the positions of :func:`relay_pattern` (0: none)."""

    kind: str
    mean: float
    std: float
    relay: float = 0.0

    @property
    def bound(self) -> float:
        return self.std * math.sqrt(3.0)  # the half-width of a uniform law with this std


def calculate_fans(tensor: torch.Tensor) -> Tuple[int, int]:
    """(fan_in, fan_out) with PyTorch's convention; needs at least 2 dimensions."""
    # A clear TypeError for a list/array/None instead of "AttributeError: ... has no attribute 'dim'".
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise InitError(f"fans need a tensor with at least 2 dimensions, got shape {tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:]) if tensor.dim() > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def sample(law: Law, shape, *, dtype=torch.float32, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw a tensor from ``law`` on the CPU and move it to ``device``/``dtype``."""
    # isinstance first: a non-Generator (a seed int) raised AttributeError on ``.device``
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise InitError("generator must be a CPU torch.Generator (samples are drawn on the CPU for reproducibility)")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    if dtype.is_floating_point and dtype.itemsize < 4 and abs(law.mean) + abs(law.relay) + 12 * law.std > torch.finfo(dtype).max:
        raise InitError(f"a law with mean {law.mean:.3g} and std {law.std:.3g} overflows {dtype}")
    out = torch.empty(shape, dtype=work)
    if law.kind == "normal":
        out.normal_(law.mean, law.std, generator=generator)
    elif law.kind == "uniform":
        out.uniform_(law.mean - law.bound, law.mean + law.bound, generator=generator)
    else:
        raise InitError(f"unknown law {law.kind!r}")
    if law.relay:
        out.add_(relay_pattern(shape, dtype=work), alpha=law.relay)
    return out.to(device=device, dtype=dtype)


def relay_pattern(shape, *, dtype=torch.float32) -> torch.Tensor:
    """0/1 tensor with one entry per output unit: output ``i`` relays input ``i mod fan_in``.

    Linear ``(out, in)``: ``P[i, i % in] = 1`` (the identity when square). Convolution
    ``(out, in/groups, *kernel)``: the kernel centre of input channel ``i % (in/groups)`` of output channel
    ``i`` (within its group), so a "same"-padded convolution copies that channel, as ``torch.nn.init.dirac_``.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise InitError(f"a relay pattern needs a weight with at least 2 dimensions, got shape {shape}")
    pattern = torch.zeros(shape, dtype=dtype)
    rows = torch.arange(shape[0])
    centre = tuple(k // 2 for k in shape[2:])
    pattern[(rows, rows % shape[1]) + tuple(torch.full_like(rows, c) for c in centre)] = 1.0
    return pattern


def _is_empty(tensor: torch.Tensor) -> bool:
    """torch.nn.init's rule for zero-element tensors: warn and do nothing. Checked before any law is computed:
    before, a (n, 0) tensor gave ZeroDivisionError (spike_aware_, fluctuation_) or InitError (ikun_, baseline_)
    while a (0, n) tensor was a silent no-op for some functions and an error for baseline_."""
    calculate_fans(tensor)  # type and dimension checks still apply
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


def _fill_(tensor: torch.Tensor, law: Law, generator: Optional[torch.Generator]) -> torch.Tensor:
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return tensor
    # An integer tensor was silently filled with truncated draws (mostly 0 and ±1); torch.nn.init raises too.
    if not tensor.is_floating_point():
        raise InitError(f"cannot initialize a {tensor.dtype} tensor: weights must be floating point")
    new = sample(law, tensor.shape, dtype=tensor.dtype, device=tensor.device, generator=generator)
    with torch.no_grad():
        return tensor.copy_(new)


# ------------------------------------------------------------------------------------------------------
# IKUN
# ------------------------------------------------------------------------------------------------------
def calculate_ikun_gain(
    surrogate: Optional[Callable] = None,
    *,
    variant: str = "surrogate",
    distribution: Optional[Distribution] = None,
    moment: int = 1,
    warn: bool = True,
) -> float:
    r"""IKUN's gain :math:`\kappa = 1/E_D[h^k]`.

    * ``variant="reference"``: the released code's :math:`\kappa = 1.27370\ldots` (it hard-codes
      :math:`h = 1/(1+u^2)` whatever the network's surrogate is).
    * ``variant="surrogate"``: :math:`h` is ``surrogate``'s real derivative (by autograd), ``D`` defaults to
      ``Uniform(-1, 1)`` as released (or e.g. the membrane distribution ``Normal(μ - θ, σ)``), ``k`` = 1 as
      released or 2.

    Warns when κ lies far outside 1–3 (sharp or narrow surrogates give very large gains), with the reason.
    """
    if variant == "reference":
        return theory.ikun_reference_kappa()
    if variant != "surrogate":
        raise InitError(f"IKUN variant must be 'surrogate' or 'reference', got {variant!r}")
    if moment not in (1, 2):
        raise InitError(f"IKUN moment must be 1 or 2, got {moment!r}")
    if surrogate is None:
        raise InitError("IKUN variant='surrogate' needs the neuron's surrogate (spike function)")
    distribution = Uniform() if distribution is None else distribution
    moments = surrogate_moments(surrogate, distribution)
    value = moments.moment(moment)
    kind, params = describe_surrogate(surrogate)
    if not (math.isfinite(value) and value > 0):
        raise InitError(f"IKUN: E[h^{moment}] = {value:.3g} for {kind}{params} over {distribution}: κ = 1/E is not a "
                        "positive finite gain (the surrogate is zero or changes sign there)")
    kappa = 1.0 / value
    if warn and not (KAPPA_TYPICAL[0] / 2 <= kappa <= 3 * KAPPA_TYPICAL[1]):
        peak = float(surrogate_derivative(surrogate, torch.zeros(1)).abs().max())
        why = ("the surrogate is narrow or low relative to D: little of its mass falls inside it"
               if kappa > 1 else "the surrogate is tall relative to D")
        warnings.warn(f"IKUN gain κ = {kappa:.3g} for {kind}{params} (E[h^{moment}] = {value:.3g} over {distribution}, "
                      f"h(0) = {peak:.3g}): {why}; weights get std ×{math.sqrt(kappa):.2g} of LeCun's", stacklevel=2)
    return kappa


def ikun_(
    tensor: torch.Tensor,
    surrogate: Optional[Callable] = None,
    *,
    variant: str = "surrogate",
    version: Optional[str] = None,
    mode: Optional[str] = None,
    distribution: Optional[Distribution] = None,
    moment: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with :math:`\mathcal{N}(0, \kappa/\mathrm{fan})` (IKUN, Chang et al. 2024).

    ``version="v1"`` uses ``fan_in``; ``version="v2"`` uses ``fan_in + fan_out`` as released (no Glorot factor 2;
    for convolutions PyTorch's ``fan_out = out_channels/groups · prod(kernel)``, where the released code crashes).
    Otherwise ``mode`` is ``fan_in`` (default), ``fan_out``, ``fan_avg`` or ``fan_sum``. See
    :func:`calculate_ikun_gain` for ``variant``, ``distribution`` and ``moment``.
    """
    if _is_empty(tensor):
        return tensor
    if version is not None:
        if version not in ("v1", "v2"):
            raise InitError(f"IKUN version must be 'v1' or 'v2', got {version!r}")
        if mode is not None:
            raise InitError("give either version= or mode=, not both")
        mode = "fan_in" if version == "v1" else "fan_sum"
    fan = theory.fan_for_mode(*calculate_fans(tensor), mode or "fan_in")
    kappa = calculate_ikun_gain(surrogate, variant=variant, distribution=distribution, moment=moment)
    return _fill_(tensor, Law("normal", 0.0, math.sqrt(theory.ikun_variance(fan, kappa))), generator)


# ------------------------------------------------------------------------------------------------------
# Spike-aware (Micheli et al. 2024)
# ------------------------------------------------------------------------------------------------------
def _target_sigma_u(threshold: float, sigma_u: Optional[float], rate: Optional[float]) -> float:
    if sigma_u is not None and rate is not None:
        raise InitError("give the target as sigma_u= or as rate=, not both")
    if rate is not None:
        return theory.sigma_u_for_rate(threshold, rate)
    return float(threshold) if sigma_u is None else float(sigma_u)


def calculate_spike_aware_gain(
    threshold: float = 1.0,
    *,
    sigma_u: Optional[float] = None,
    rate: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    kernel_sq_sum: float = 1.0,
) -> float:
    r"""``fan_in · Var(W)`` of the spike-aware rule :math:`\sigma_u^2/(q_\mathrm{in}\,\Sigma K^2)`.

    The target is :math:`\sigma_u` (default :math:`\theta`) or a firing rate :math:`r`
    (:math:`\sigma_u = \theta/\Phi^{-1}(1-r)`). Without ``input_second_moment`` the input is taken to be spikes at
    the self-consistent rate :math:`1 - \Phi(\theta/\sigma_u)`: 6.30 at :math:`\theta = \sigma_u = 1`.
    """
    # float() first and a finiteness check: a str threshold raised a bare TypeError from ">", and θ = inf passed
    # and surfaced as "input second moment is nan"
    try:
        threshold = float(threshold)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InitError(f"threshold must be a single number, got {threshold!r}") from exc
    if not (math.isfinite(threshold) and threshold > 0):
        raise InitError(f"threshold must be a finite number > 0, got {threshold}")
    sigma = _target_sigma_u(threshold, sigma_u, rate)
    q = theory.firing_probability(threshold, sigma) if input_second_moment is None else input_second_moment
    return theory.spike_aware_variance(1.0, sigma, q, kernel_sq_sum)


def check_relay(relay) -> float:
    """``relay`` as a float in [0, 1), or an :class:`InitError`."""
    try:
        value = float(relay)
    except (TypeError, ValueError) as exc:
        raise InitError(f"relay must be a number in [0, 1), got {relay!r}") from exc
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise InitError(f"relay must be a number in [0, 1), got {relay!r}")
    return value


def calculate_relay(relay: float, dense_std: float, fan_in: int, threshold: float, input_rate: float,
                    input_scale: float = 1.0) -> Tuple[float, float]:
    r"""(dense std, relay weight) of a relay-structured layer: :math:`W = g\,P + \sqrt{1-\rho}\;\sigma_w Z`.

    ``relay`` :math:`\rho \in [0, 1)` moves that fraction of the law's variance out of the dense random part;
    each output unit instead receives one strong input (:func:`relay_pattern`) whose weight :math:`g/c`
    (:math:`c` = ``input_scale``, the neuron's input scaling) keeps the firing probability at the input rate
    :math:`p` for one step (:func:`snn_initplug.theory.relay_gain` with the dense membrane std
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


def spike_aware_(
    tensor: torch.Tensor,
    threshold: float = 1.0,
    *,
    sigma_u: Optional[float] = None,
    rate: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    kernel_sq_sum: float = 1.0,
    relay: float = 0.0,
    input_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with :math:`\mathcal{N}(0, \sigma_u^2/(\mathrm{fan\_in}\, q_\mathrm{in}\, \Sigma K^2))`.

    ``kernel_sq_sum`` is :math:`\Sigma K^2` of the neuron over the horizon the variance should hold at:
    :math:`c^2` for the single-step form (1 for snnTorch), the stationary sum for the multi-step extension.
    ``relay`` :math:`\rho > 0` (spike inputs only) keeps :math:`1-\rho` of that variance random and adds a
    one-to-one relay path (:func:`calculate_relay`, :func:`relay_pattern`), for depth; ``input_scale`` is the
    neuron's input scaling :math:`c` (1 for snnTorch, :math:`1/\tau` for SpikingJelly's LIF with decay_input).
    """
    if _is_empty(tensor):
        return tensor
    fan_in, _ = calculate_fans(tensor)
    gain = calculate_spike_aware_gain(threshold, sigma_u=sigma_u, rate=rate, input_second_moment=input_second_moment,
                                      kernel_sq_sum=kernel_sq_sum)
    std, weight = math.sqrt(gain / fan_in), 0.0
    if relay:
        sigma = _target_sigma_u(float(threshold), sigma_u, rate)
        q = theory.firing_probability(float(threshold), sigma) if input_second_moment is None else input_second_moment
        std, weight = calculate_relay(relay, std, fan_in, float(threshold), q, input_scale)
    return _fill_(tensor, Law("normal", 0.0, std, weight), generator)


# ------------------------------------------------------------------------------------------------------
# Fluctuation-driven (Rossbroich et al. 2022)
# ------------------------------------------------------------------------------------------------------
def calculate_fluctuation(
    fan_in: int,
    *,
    kernel_sums: Tuple[float, float],
    input_rate: Optional[float] = None,
    input_mean: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    mu_u: float = 0.0,
    sigma_u: float = 1.0,
    variance_share: float = 1.0,
    total_drive: Optional[float] = None,
) -> Law:
    r"""The normal law :math:`(\mu_w, \sigma_w)` of the fluctuation-driven rule.

    For spike input give ``input_rate`` p (then :math:`m = q = p`); for analog input give its mean and second
    moment. ``kernel_sums`` = :math:`(\Sigma K, \Sigma K^2)` of the neuron's own impulse response.
    """
    if input_rate is not None:
        if input_mean is not None or input_second_moment is not None:
            raise InitError("give input_rate= (spikes) or input_mean=/input_second_moment=, not both")
        input_mean = input_second_moment = input_rate
    if input_mean is None or input_second_moment is None:
        raise InitError("fluctuation-driven init needs the input rate (or the input's mean and second moment)")
    stats = theory.fluctuation_stats(fan_in, input_mean, input_second_moment, kernel_sums[0], kernel_sums[1], mu_u,
                                     sigma_u, variance_share, total_drive)
    return Law("normal", stats.mean, stats.std)


def fluctuation_(tensor: torch.Tensor, *, generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
    """Fill ``tensor`` from :func:`calculate_fluctuation` (same keyword arguments, ``fan_in`` from the tensor)."""
    if _is_empty(tensor):
        return tensor
    fan_in, _ = calculate_fans(tensor)
    return _fill_(tensor, calculate_fluctuation(fan_in, **kwargs), generator)


# ------------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------------
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


BASELINES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "lecun_normal", "spikingjelly")


def baseline_(tensor: torch.Tensor, name: str, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``tensor`` from :func:`baseline_law`."""
    if _is_empty(tensor):
        return tensor
    return _fill_(tensor, baseline_law(name, *calculate_fans(tensor)), generator)

