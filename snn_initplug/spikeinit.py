r"""SpikeInit's numbers (Shi & Yu 2026): the weight scale σ* that makes a neuron fire at a target rate, the
membrane the surrogate then sees, and the gradient target its shape is set to (:func:`calculate_spikeinit`).
The stationary-membrane mathematics lives in :mod:`snn_initplug.stationary`; the tensor-level initializer is
:func:`snn_initplug.spikeinit_`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch

from .errors import InitError
from .guard import entry_point
from .init import calculate_fans, fill_with_law_, is_empty_tensor
from .laws import spikeinit_law
from .options import SpikeInitOptions
from .stationary import (
    MembraneDynamics,
    gradient_target,
    simulated_input_std,
    spike_input_std,
    static_firing_probability,
    static_input_std,
    stationary_membrane,
    surrogate_shape,
)
from .surrogate import Normal

__all__ = ["SpikeInitScale", "calculate_spikeinit", "spikeinit_"]


@dataclass(frozen=True)
class SpikeInitScale:
    """What :func:`calculate_spikeinit` found: the weight scale σ* (``fan_in · Var(W) = σ*²``), the input std
    ``input_std`` in membrane units, the membrane ``N(membrane_mean, membrane_std²)`` the surrogate sees, the
    firing probability it predicts (``rate``), the gradient target ``E[h(y − θ)²]`` of Theorem 5.1, and how it
    was computed (``how``: ``"closed form"``, ``"static input, closed form"``, or ``"simulated ..."``)."""

    weight_scale: float
    input_std: float
    membrane_mean: float
    membrane_std: float
    rate: float
    gradient_target: float
    threshold: float
    how: str

    @property
    def membrane(self) -> Normal:
        """The law of :math:`y - \theta`, the surrogate's argument."""
        return Normal(self.membrane_mean - self.threshold, self.membrane_std)

    def surrogate_shape(self, family: Callable[[float], Callable], start: float = 1.0) -> float:
        """α* of a surrogate family (``alpha -> spike function``) for this membrane
        (:func:`snn_initplug.stationary.surrogate_shape`), the root nearest ``start``."""
        return surrogate_shape(family, self.gradient_target, self.membrane, start)


Parameter = Union[float, torch.Tensor]


def _values(name: str, value: Parameter) -> Union[float, tuple[float, ...]]:
    """A number, or the distinct per-neuron values of a tensor, as floats (one value: a float)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu", torch.float64).flatten()
        if flat.numel() == 0 or not torch.isfinite(flat).all():
            raise InitError(f"spikeinit: {name} must hold finite values, got {value!r}")
        return float(flat[0]) if bool((flat == flat[0]).all()) else tuple(flat.tolist())
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InitError(f"spikeinit: {name} must be a number or a tensor, got {value!r}") from exc
    if not math.isfinite(number):
        raise InitError(f"spikeinit: {name} must be finite, got {value!r}")
    return number


def _mean(value: Union[float, tuple[float, ...]]) -> float:
    return float(np.mean(value)) if isinstance(value, tuple) else value


@entry_point("calculate_spikeinit")
def calculate_spikeinit(
    *,
    target_rate: float = 0.1,
    decay: Parameter = 0.5,
    input_scale: Parameter = 0.5,
    threshold: Parameter = 1.0,
    reset: str = "hard",
    reset_value: float = 0.0,
    reset_timing: Optional[str] = None,
    input: str = "spikes",
    input_second_moment: Optional[float] = None,
    input_mean: Optional[float] = None,
    steps: Optional[int] = None,
    simulate: bool = False,
    samples: int = 1 << 15,
    seed: int = 0,
) -> SpikeInitScale:
    r"""SpikeInit's weight scale :math:`\sigma^*` (Shi & Yu 2026) for a neuron
    :math:`y_t = \kappa y_{t-1} + \lambda (W x)_t` with threshold :math:`\theta`: the weights
    :math:`\mathcal{N}(0, \sigma^{*2}/\mathrm{fan\_in})` make it fire with probability ``target_rate`` p.

    * Spike input (``input="spikes"``, second moment :math:`q`, default p): the input current has std
      :math:`s = \lambda\sigma^*\sqrt{q}`; :math:`s` solves the Gaussian closure of the stationary membrane at
      rate p (:func:`snn_initplug.stationary.spike_input_std`), so :math:`\sigma^* = s/(\lambda\sqrt q)`.
    * Static analog input (``input="static"``, one frame held for every step, second moment :math:`q`, default
      1): :math:`P_\mathrm{static}(s) = p` (:func:`snn_initplug.stationary.static_input_std`).
    * Where the closure does not hold (``steps=T``; a subtractive reset; a hard reset to another value;
      per-neuron parameters; no leak), or with ``simulate=True``, the neuron's update is simulated (Algorithm 3,
      :func:`snn_initplug.stationary.simulated_input_std`): ``samples`` seeded neurons, the rate averaged over
      T steps from rest (or stationary), solved for :math:`s`. The simulation also holds the part of the input
      that fixed weights make constant per neuron (:math:`p\sum_j W_{ij}`, a fraction :math:`m^2/q` of the
      variance for spikes of mean :math:`m`), which the closure leaves out: a leaky neuron with a subtractive
      reset integrates it.

    The gradient target is :func:`snn_initplug.stationary.gradient_target` (over T steps with ``steps``); the
    surrogate's shape follows from :meth:`SpikeInitScale.surrogate_shape`.

    Args:
        target_rate: p in (0, 1).
        decay: :math:`\kappa` (a number or per-neuron values).
        input_scale: :math:`\lambda` (SpikingJelly ``decay_input=True``: 1/τ; snnTorch: 1).
        threshold: :math:`\theta`.
        reset: ``"hard"`` (to ``reset_value``), ``"subtract"`` or ``"none"``.
        reset_value: the membrane after a hard reset.
        reset_timing: when a subtractive reset acts (:attr:`snn_initplug.NeuronSpec.reset_timing`):
            ``"after_spike"``, θ then decays with the membrane (SpikingJelly); ``"next_step"`` or None, removed
            undecayed at the next step (snnTorch).
        input: ``"spikes"`` or ``"static"``.
        input_second_moment: :math:`q` of the input (default p for spikes, 1 for a static input).
        input_mean: the mean :math:`m` of a spike input (default p).
        steps: T, or None for the stationary rate.
        simulate: the simulated variant even where the closed form holds (it holds the per-neuron input mean).
        samples: simulated neurons.
        seed: the simulation's seed.

    Returns:
        SpikeInitScale: σ*, the membrane, the predicted rate and the gradient target.

    Example:
        SpikingJelly's ``LIFNode(tau=2)`` (κ = λ = 0.5), θ = 1, p = 0.1:

        >>> import snn_initplug as sip
        >>> scale = sip.calculate_spikeinit(target_rate=0.1, decay=0.5, input_scale=0.5, threshold=1.0)
        >>> round(scale.weight_scale, 3), round(scale.membrane_mean, 4), round(scale.membrane_std, 4)
        (5.157, -0.1422, 0.8913)
        >>> round(sip.calculate_spikeinit(decay=0.5, input_scale=0.5, input="static").weight_scale, 4)
        1.1425
    """
    options = SpikeInitOptions(target_rate=target_rate, steps=steps, simulate=simulate, samples=samples, seed=seed)
    if input not in ("spikes", "static"):
        raise InitError(f"spikeinit: input must be 'spikes' or 'static', got {input!r}")
    kappa, lam, theta = _values("decay", decay), _values("input_scale", input_scale), _values("threshold", threshold)
    given = input_second_moment if input_second_moment is not None else (
        options.target_rate if input == "spikes" else 1.0)
    q = _values("input_second_moment", given)
    if not (isinstance(q, float) and q > 0):
        raise InitError(f"spikeinit: input_second_moment must be a single number > 0, got {input_second_moment!r}")
    reset_value = float(reset_value)
    dynamics = MembraneDynamics(kappa, theta, reset, reset_value, reset_timing)
    if min(np.atleast_1d(lam)) <= 0:
        raise InitError(f"spikeinit: input_scale must be > 0, got {input_scale!r}")
    p, static = options.target_rate, input == "static"
    if dynamics.closed_form and options.steps is None and isinstance(lam, float) and not options.simulate:
        assert isinstance(kappa, float) and isinstance(theta, float)  # noqa: S101 - closed_form checked it
        if static:
            s = static_input_std(p, kappa, theta)
            rate, how = static_firing_probability(s, kappa, theta), "static input, closed form (P_static)"
            # the membrane under a held input: the closure at this input std (for the surrogate's shape)
            membrane = stationary_membrane(s, kappa, theta)
        else:
            s = spike_input_std(p, kappa, theta)
            membrane = stationary_membrane(s, kappa, theta)
            rate, how = membrane.rate, "closed form (Gaussian closure)"
        mean, std, weight_scale = membrane.mean, membrane.std, s / (lam * math.sqrt(q))
    else:
        lams = lam if isinstance(lam, tuple) else (lam,)
        # the part of the input variance fixed weights hold per neuron: all of it for a static frame, mean²/q for
        # spikes (p for spikes at the target rate, i.i.d. over inputs and steps)
        held = 1.0 if static else min(1.0, (p if input_mean is None else input_mean) ** 2 / q)
        # bisected in weight units (σ·√q): each neuron's input std is that times its own λ
        found = simulated_input_std(p, dynamics, options.steps, held_fraction=held, input_scales=lams,
                                    samples=options.samples, seed=options.seed)
        s, simulated = found.input_std, found.membrane
        rate, mean, std = simulated.rate, simulated.mean, simulated.std
        weight_scale = s / math.sqrt(q)
        s = s * _mean(lam)
        horizon = "stationary" if options.steps is None else f"over {options.steps} steps"
        how = (f"simulated ({'static input, ' if static else ''}{horizon}, {options.samples} neurons, "
               f"held fraction of the input variance {found.held_fraction:.3g})")
    target = gradient_target(p, _mean(kappa), weight_scale, _mean(lam), options.steps)
    return SpikeInitScale(weight_scale, s, mean, std, rate, target, _mean(theta), how)


@entry_point("spikeinit_")
def spikeinit_(tensor: torch.Tensor, *, generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
    r"""Fill ``tensor`` with SpikeInit's law :math:`\mathcal{N}(0, \sigma^{*2}/\mathrm{fan\_in})`
    (Shi & Yu 2026), :math:`\sigma^*` from :func:`calculate_spikeinit` (:func:`snn_initplug.laws.spikeinit_law`).

    Args:
        tensor: an n-dimensional ``torch.Tensor`` (n ≥ 2), filled in place; ``fan_in`` is read from it.
        generator: a CPU ``torch.Generator`` to sample from.
        **kwargs: the keyword arguments of :func:`calculate_spikeinit` (the neuron's decay, input scale,
            threshold, reset, the target rate, the input kind, steps).

    Returns:
        Tensor: ``tensor``.

    Example:
        >>> import torch
        >>> import snn_initplug as sip
        >>> w = sip.spikeinit_(torch.empty(512, 400), target_rate=0.1, decay=0.5, input_scale=0.5,
        ...                    generator=torch.Generator().manual_seed(0))
        >>> round(w.std().item() * 400 ** 0.5, 1)  # std · √fan_in = σ* = 5.157
        5.2
    """
    if is_empty_tensor(tensor):
        return tensor
    fan_in, _ = calculate_fans(tensor)
    return fill_with_law_(tensor, spikeinit_law(fan_in, calculate_spikeinit(**kwargs).weight_scale), generator)
