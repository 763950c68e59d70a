r"""Tensor-level initializers in the style of ``torch.nn.init``.

Each function fills a tensor in place (name ending in ``_``) and returns it, takes ``generator=`` for
reproducibility, and has a ``calculate_*`` companion that returns the numbers without touching a tensor. Samples
are drawn on the CPU (float64 for float64 tensors, else float32), then copied to the tensor's device and dtype.

Fans follow PyTorch: ``fan_in = in_features`` or ``in_channels/groups · prod(kernel)``, ``fan_out`` likewise.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import torch

from . import theory
from .deprecation import renamed_arguments
from .errors import ArgumentTypeError, InitError
from .guard import entry_point
from .laws import (
    BASELINES,
    Law,
    RelayDynamics,
    baseline_law,
    calculate_relay,
    fluctuation_law,
    ikun_law,
    membrane_target,
    spike_aware_law,
)
from .options import FluctuationOptions, IkunOptions, SpikeAwareOptions, positive_numbers
from .surrogate import Distribution, Uniform, describe_surrogate, surrogate_derivative, surrogate_moments

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
    "calculate_fluctuation",
    "fluctuation_",
    "baseline_law",
    "baseline_",
    "BASELINES",
]

KAPPA_TYPICAL = (1.0, 3.0)  # the range of κ for the common unit-area surrogates on Uniform(-1, 1)


def calculate_fans(tensor: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) with PyTorch's convention; needs at least 2 dimensions."""
    # A clear TypeError for a list/array/None instead of "AttributeError: ... has no attribute 'dim'".
    if not isinstance(tensor, torch.Tensor):
        raise ArgumentTypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
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
    result = out.to(device=device, dtype=dtype)
    # a law with a non-zero scale almost never draws 0: mostly zeros means its scale underflows the dtype (only
    # possible for a half dtype, or a scale near the dtype's smallest normal: no pass over the draws otherwise)
    scale = max(law.std, abs(law.mean))
    may_underflow = dtype.itemsize < 4 or scale < torch.finfo(dtype).tiny * 2.0 ** 24
    if scale > 0 and may_underflow and result.numel() and result.device.type != "meta":
        zeros = int((result == 0).sum())
        if 2 * zeros > result.numel():
            raise InitError(f"a law with mean {law.mean:.3g} and std {law.std:.3g} underflows {dtype}: "
                            f"{zeros} of {result.numel()} draws are 0 (a tiny threshold?)")
    return result


def relay_pattern(shape, *, dtype=torch.float32) -> torch.Tensor:
    r"""0/1 tensor with one entry per output unit: output ``i`` relays input ``i mod fan_in``.

    Linear ``(out, in)``: ``P[i, i % in] = 1`` (the identity when square). Convolution
    ``(out, in/groups, *kernel)``: the kernel centre of input channel ``i % (in/groups)`` of output channel
    ``i`` (within its group), so a "same"-padded convolution copies that channel, as ``torch.nn.init.dirac_``.

    Args:
        shape: the weight's shape, ``(out, in)`` or ``(out, in/groups, *kernel)``.
        dtype: the pattern's dtype.

    Returns:
        Tensor: the 0/1 pattern :math:`P` of the relay structure :math:`W = g\,P + \sqrt{1-\rho}\;\sigma_w Z`.

    Example:
        >>> import snn_initplug as sip
        >>> sip.relay_pattern((3, 2))
        tensor([[1., 0.],
                [0., 1.],
                [1., 0.]])
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise InitError(f"a relay pattern needs a weight with at least 2 dimensions, got shape {shape}")
    pattern = torch.zeros(shape, dtype=dtype)
    rows = torch.arange(shape[0])
    centre = tuple(k // 2 for k in shape[2:])
    pattern[(rows, rows % shape[1]) + tuple(torch.full_like(rows, c) for c in centre)] = 1.0
    return pattern


def is_empty_tensor(tensor: torch.Tensor) -> bool:
    """torch.nn.init's rule for zero-element tensors: warn and do nothing. Checked before any law is computed
    (a law of a zero fan divides by zero), the same for every function and both (n, 0) and (0, n) shapes."""
    calculate_fans(tensor)  # type and dimension checks still apply
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=4)
        return True
    return False


def fill_with_law_(tensor: torch.Tensor, law: Law, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Fill ``tensor`` in place with draws of ``law`` (:func:`sample`); floating-point tensors only."""
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=4)
        return tensor
    # an integer tensor would be filled with truncated draws (mostly 0 and ±1); torch.nn.init raises too
    if not tensor.is_floating_point():
        raise InitError(f"cannot initialize a {tensor.dtype} tensor: weights must be floating point")
    new = sample(law, tensor.shape, dtype=tensor.dtype, device=tensor.device, generator=generator)
    with torch.no_grad():
        return tensor.copy_(new)


# --- IKUN ---
@entry_point("calculate_ikun_gain")
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

    Args:
        surrogate: the neuron's spike function as the framework calls it (snnTorch ``spike_grad``,
            SpikingJelly ``surrogate_function``); not needed for ``variant="reference"``.
        variant: ``"surrogate"`` or ``"reference"``.
        distribution: :class:`~snn_initplug.surrogate.Uniform` or :class:`~snn_initplug.surrogate.Normal` law of :math:`u - \theta`.
        moment: :math:`k`, 1 or 2.
        warn: warn about an unusual κ.

    Returns:
        float: :math:`\kappa`.

    Example:
        >>> import snntorch as snn
        >>> import snn_initplug as sip
        >>> sip.calculate_ikun_gain(snn.surrogate.atan(alpha=2.0))  # 1/E[h] over U(-1, 1)
        2.4881
        >>> sip.calculate_ikun_gain(variant="reference")  # the released code's constant
        1.2737
    """
    IkunOptions(variant=variant, distribution=distribution, moment=moment)  # validates
    if variant == "reference":
        return theory.ikun_reference_kappa()
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
                      f"h(0) = {peak:.3g}): {why}; weights get std ×{math.sqrt(kappa):.2g} of LeCun's", stacklevel=3)
    return kappa


@renamed_arguments(mode="fan_mode")
@entry_point("ikun_")
def ikun_(
    tensor: torch.Tensor,
    surrogate: Optional[Callable] = None,
    *,
    variant: str = "surrogate",
    version: Optional[str] = None,
    fan_mode: Optional[str] = None,
    distribution: Optional[Distribution] = None,
    moment: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with :math:`\mathcal{N}(0, \kappa/\mathrm{fan})` (IKUN, Chang et al. 2024).

    ``version="v1"`` uses ``fan_in``; ``version="v2"`` uses ``fan_in + fan_out`` as released (no Glorot factor 2;
    for convolutions PyTorch's ``fan_out = out_channels/groups · prod(kernel)``, where the released code crashes).
    Otherwise ``fan_mode`` is ``fan_in`` (default), ``fan_out``, ``fan_avg`` or ``fan_sum``. See
    :func:`calculate_ikun_gain` for ``variant``, ``distribution`` and ``moment``; the law is
    :func:`snn_initplug.laws.ikun_law`.

    Args:
        tensor: an n-dimensional ``torch.Tensor`` (n ≥ 2), filled in place.
        surrogate: the neuron's spike function (``snn.Leaky(...).spike_grad``, ``neuron.surrogate_function``).
        variant: ``"surrogate"`` (κ from ``surrogate``) or ``"reference"`` (the released κ = 1.2737).
        version: ``"v1"`` or ``"v2"`` (the released variants), or None to use ``fan_mode``.
        fan_mode: ``"fan_in"`` (default), ``"fan_out"``, ``"fan_avg"`` or ``"fan_sum"`` (``mode=``, its former
            name, still works with a ``DeprecationWarning``).
        distribution: the law of :math:`u - \theta` the gain is averaged over (default ``Uniform(-1, 1)``).
        moment: :math:`k` in :math:`\kappa = 1/E_D[h^k]`.
        generator: a CPU ``torch.Generator`` to sample from.

    Returns:
        Tensor: ``tensor``.

    Example:
        >>> import torch, snntorch as snn
        >>> import snn_initplug as sip
        >>> w = torch.empty(256, 784)
        >>> _ = sip.ikun_(w, snn.surrogate.atan(alpha=2.0), generator=torch.Generator().manual_seed(0))
        >>> kappa = sip.calculate_ikun_gain(snn.surrogate.atan(alpha=2.0))
        >>> round(w.std().item() / (kappa / 784) ** 0.5, 1)  # std = sqrt(κ / fan_in)
        1.0
    """
    if is_empty_tensor(tensor):
        return tensor
    options = IkunOptions(variant=variant, version=version, fan_mode=fan_mode, distribution=distribution, moment=moment)
    kappa = calculate_ikun_gain(surrogate, variant=variant, distribution=distribution, moment=moment)
    return fill_with_law_(tensor, ikun_law(*calculate_fans(tensor), kappa, fan_mode=options.fan), generator)


# --- Spike-aware (Micheli et al. 2024) ---
def _positive_number(name: str, value) -> float:
    # float() and finiteness first: a str fails in ">" with a bare TypeError, θ = inf later as a nan moment
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InitError(f"{name} must be a single number, got {value!r}") from exc
    if not (math.isfinite(number) and number > 0):
        raise InitError(f"{name} must be a finite number > 0, got {value!r}")
    return number


@renamed_arguments(rate="target_rate")
@entry_point("calculate_spike_aware_gain")
def calculate_spike_aware_gain(
    threshold: float = 1.0,
    *,
    sigma_u: Optional[float] = None,
    target_rate: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    kernel_sq_sum: float = 1.0,
) -> float:
    r"""``fan_in · Var(W)`` of the spike-aware rule :math:`\sigma_u^2/(q_\mathrm{in}\,\Sigma K^2)`.

    The target is :math:`\sigma_u` (default :math:`\theta`) or a firing rate :math:`r`
    (:math:`\sigma_u = \theta/\Phi^{-1}(1-r)`, :func:`snn_initplug.laws.membrane_target`). Without
    ``input_second_moment`` the input is taken to be spikes at the self-consistent rate
    :math:`1 - \Phi(\theta/\sigma_u)`: 6.30 at :math:`\theta = \sigma_u = 1`.

    Args:
        threshold: the firing threshold :math:`\theta`.
        sigma_u: the membrane target :math:`\sigma_u` (default :math:`\theta`).
        target_rate: a target firing probability instead of ``sigma_u`` (``rate=``: deprecated).
        input_second_moment: :math:`q_\mathrm{in}` of the input when it is known (default: spikes at the
            self-consistent rate).
        kernel_sq_sum: :math:`\Sigma K^2` of the neuron.

    Returns:
        float: :math:`\mathrm{fan\_in}\cdot\mathrm{Var}(W)`.

    Example:
        >>> import snn_initplug as sip
        >>> sip.calculate_spike_aware_gain(1.0)
        6.3030
        >>> sip.calculate_spike_aware_gain(1.0, target_rate=0.1)
        6.0887
    """
    threshold = _positive_number("threshold", threshold)
    SpikeAwareOptions(sigma_u=sigma_u, target_rate=target_rate, input_second_moment=input_second_moment)
    sigma = membrane_target(threshold, sigma_u=sigma_u, target_rate=target_rate)
    q = theory.firing_probability(threshold, sigma) if input_second_moment is None else input_second_moment
    return theory.spike_aware_variance(1.0, sigma, q, kernel_sq_sum)


@renamed_arguments(rate="target_rate")
@entry_point("spike_aware_")
def spike_aware_(
    tensor: torch.Tensor,
    threshold: float = 1.0,
    *,
    sigma_u: Optional[float] = None,
    target_rate: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    kernel_sq_sum: float = 1.0,
    relay: float = 0.0,
    input_scale: float = 1.0,
    relay_dynamics: Optional[RelayDynamics] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with :math:`\mathcal{N}(0, \sigma_u^2/(\mathrm{fan\_in}\, q_\mathrm{in}\, \Sigma K^2))`.

    ``kernel_sq_sum`` is :math:`\Sigma K^2` of the neuron over the horizon the variance should hold at:
    :math:`c^2` for the single-step form (1 for snnTorch), the stationary sum for the multi-step extension.
    Without ``input_second_moment`` the input is spikes at the self-consistent rate
    :math:`1 - \Phi(\theta/\sigma_u)`. ``relay`` :math:`\rho > 0` (spike inputs only) keeps :math:`1-\rho` of
    that variance random and adds a one-to-one relay path (:func:`calculate_relay`, :func:`relay_pattern`), for
    depth; ``input_scale`` is the neuron's input scaling :math:`c` (1 for snnTorch, :math:`1/\tau` for
    SpikingJelly's LIF with decay_input). The law is :func:`snn_initplug.laws.spike_aware_law`.

    Args:
        tensor: an n-dimensional ``torch.Tensor`` (n ≥ 2), filled in place.
        threshold: the firing threshold :math:`\theta`.
        sigma_u: the membrane target :math:`\sigma_u` (default :math:`\theta`).
        target_rate: a target firing probability instead of ``sigma_u`` (``rate=``: deprecated).
        input_second_moment: :math:`q_\mathrm{in}` when known.
        kernel_sq_sum: :math:`\Sigma K^2` of the neuron.
        relay: :math:`\rho` in [0, 1] (1: the copy relay, :func:`calculate_relay`).
        input_scale: the neuron's input scaling :math:`c`.
        relay_dynamics: the neuron's leak, reset and the steps the relay weight should hold the rate over
            (:class:`~snn_initplug.laws.RelayDynamics`; default one step, the closed form).
        generator: a CPU ``torch.Generator`` to sample from.

    Returns:
        Tensor: ``tensor``.

    Example:
        >>> import torch
        >>> import snn_initplug as sip
        >>> w = torch.empty(512, 784)
        >>> _ = sip.spike_aware_(w, threshold=1.0, generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 784 / sip.calculate_spike_aware_gain(1.0), 1)  # Var(W) = gain / fan_in
        1.0
    """
    if is_empty_tensor(tensor):
        return tensor
    fan_in, _ = calculate_fans(tensor)
    threshold = _positive_number("threshold", threshold)
    for name, value in (("input_scale", input_scale), ("kernel_sq_sum", kernel_sq_sum)):
        positive_numbers("spike_aware_", name, value)
    options = SpikeAwareOptions(sigma_u=sigma_u, target_rate=target_rate, input_second_moment=input_second_moment,
                                relay=relay)
    sigma = membrane_target(threshold, sigma_u=options.sigma_u, target_rate=options.target_rate)
    q = theory.firing_probability(threshold, sigma) if input_second_moment is None else input_second_moment
    law = spike_aware_law(fan_in, threshold, sigma, q, kernel_sq_sum, relay=options.relay, input_scale=input_scale,
                          relay_dynamics=relay_dynamics)
    return fill_with_law_(tensor, law, generator)


# --- Fluctuation-driven (Rossbroich et al. 2022) ---
@renamed_arguments(rate="target_rate")
@entry_point("calculate_fluctuation")
def calculate_fluctuation(
    fan_in: int,
    *,
    kernel_sums: tuple[float, float],
    threshold: float = 1.0,
    input_rate: Optional[float] = None,
    input_mean: Optional[float] = None,
    input_second_moment: Optional[float] = None,
    mu_u: float = 0.0,
    sigma_u: Optional[float] = None,
    target_rate: Optional[float] = None,
    variance_share: float = 1.0,
    total_drive: Optional[float] = None,
) -> Law:
    r"""The normal law :math:`(\mu_w, \sigma_w)` of the fluctuation-driven rule
    (:func:`snn_initplug.laws.fluctuation_law`).

    For spike input give ``input_rate`` p (then :math:`m = q = p`); for analog input give its mean and second
    moment. ``kernel_sums`` = :math:`(\Sigma K, \Sigma K^2)` of the neuron's own impulse response. The membrane
    target is ``mu_u`` and ``sigma_u``, default :math:`\theta - \mu_U` (one threshold gap; the model-level rule
    uses the same default), or a ``target_rate``.

    Args:
        fan_in: inputs per output unit.
        kernel_sums: :math:`(\Sigma K, \Sigma K^2)` of the neuron.
        threshold: the firing threshold :math:`\theta`.
        input_rate: the spike probability of a spike input.
        input_mean: :math:`m` of an analog input.
        input_second_moment: :math:`q` of an analog input.
        mu_u: the target membrane mean :math:`\mu_U`.
        sigma_u: the target membrane standard deviation :math:`\sigma_U`.
        target_rate: a target firing probability instead of ``sigma_u`` (``rate=``: deprecated).
        variance_share: the share :math:`s` of the membrane variance this weight provides.
        total_drive: :math:`D` when several populations feed the neuron.

    Returns:
        Law: normal with mean :math:`\mu_w` and std :math:`\sigma_w`.

    Example:
        A LIF neuron with β = 0.9 (:math:`\Sigma K = 10`, :math:`\Sigma K^2 = 1/0.19`), inputs spiking at 10%:

        >>> import snn_initplug as sip
        >>> sip.calculate_fluctuation(784, kernel_sums=(10.0, 1 / 0.19), input_rate=0.1)
        Law(kind='normal', mean=0.0, std=0.0492, relay=0.0)
    """
    options = FluctuationOptions(mu_u=mu_u, sigma_u=sigma_u, target_rate=target_rate, input_rate=input_rate,
                                 input_mean=input_mean, input_second_moment=input_second_moment)  # each number checked, a rate in [0, 1]
    kernel_sums = positive_numbers("calculate_fluctuation", "kernel_sums", kernel_sums, 2)  # type: ignore[assignment]
    input_rate, input_mean, input_second_moment = options.input_rate, options.input_mean, options.input_second_moment
    if input_rate is not None:
        if input_mean is not None or input_second_moment is not None:
            raise InitError("give input_rate= (spikes) or input_mean=/input_second_moment=, not both")
        input_mean = input_second_moment = input_rate
    if input_mean is None or input_second_moment is None:
        raise InitError("fluctuation-driven init needs the input rate (or the input's mean and second moment)")
    threshold = _positive_number("threshold", threshold)
    sigma = membrane_target(threshold, sigma_u=options.sigma_u, target_rate=options.target_rate, mu_u=options.mu_u)
    return fluctuation_law(fan_in, input_mean, input_second_moment, kernel_sums[0], kernel_sums[1], mu_u=options.mu_u,
                           sigma_u=sigma, share=variance_share, total_drive=total_drive)


@entry_point("fluctuation_")
def fluctuation_(tensor: torch.Tensor, *, generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
    r"""Fill ``tensor`` with :math:`\mathcal{N}(\mu_w, \sigma_w^2)` from :func:`calculate_fluctuation`
    (Rossbroich et al. 2022).

    Args:
        tensor: an n-dimensional ``torch.Tensor`` (n ≥ 2), filled in place; ``fan_in`` is read from it.
        generator: a CPU ``torch.Generator`` to sample from.
        **kwargs: the keyword arguments of :func:`calculate_fluctuation` (``kernel_sums`` and the input
            statistics are required).

    Returns:
        Tensor: ``tensor``.

    Example:
        >>> import torch
        >>> import snn_initplug as sip
        >>> w = sip.fluctuation_(torch.empty(256, 784), kernel_sums=(10.0, 1 / 0.19), input_rate=0.1,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> round(w.std().item() / 0.0492, 1)
        1.0
    """
    if is_empty_tensor(tensor):
        return tensor
    fan_in, _ = calculate_fans(tensor)
    return fill_with_law_(tensor, calculate_fluctuation(fan_in, **kwargs), generator)


# --- Baselines ---
@entry_point("baseline_")
def baseline_(tensor: torch.Tensor, name: str, *, threshold: float = 1.0, input_scale: float = 1.0,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``tensor`` from a baseline's law (:func:`~snn_initplug.laws.baseline_law`: PyTorch's default, Kaiming,
    Xavier, LeCun, SpikingJelly's, Ding et al.'s).

    Args:
        tensor: an n-dimensional ``torch.Tensor`` (n ≥ 2), filled in place.
        name: the baseline, e.g. ``"kaiming_normal"``.
        threshold: the neuron's threshold θ (``"ding"`` only).
        input_scale: the neuron's input scaling λ (``"ding"`` only).
        generator: a CPU ``torch.Generator`` to sample from.

    Returns:
        Tensor: ``tensor``.

    Example:
        >>> import torch
        >>> import snn_initplug as sip
        >>> w = sip.baseline_(torch.empty(256, 784), "kaiming_normal", generator=torch.Generator().manual_seed(0))
        >>> round(w.std().item() / (2 / 784) ** 0.5, 1)
        1.0
    """
    if is_empty_tensor(tensor):
        return tensor
    law = baseline_law(name, *calculate_fans(tensor), threshold=_positive_number("threshold", threshold),
                       input_scale=_positive_number("input_scale", input_scale))
    return fill_with_law_(tensor, law, generator)
