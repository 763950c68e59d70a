r"""A framework-agnostic, immutable description of a spiking neuron.

Every supported neuron is brought to the canonical discrete form

.. math::

    i[t] = \alpha\, i[t-1] + I[t]                 \quad\text{(only with a synaptic stage)}

    u[t] = \beta\, u[t-1] + c\, i[t] - \text{reset}, \qquad s[t] = H(u[t] - \theta)

with the surrogate derivative :math:`h` replacing :math:`H'` in the backward pass and
:math:`\partial S/\partial u = \text{spike\_scale}\cdot h(u - \theta)`.

The impulse response :math:`K[k]` is the membrane's response (no threshold) to a unit input at :math:`k = 0`.
Its sums :math:`\Sigma K` and :math:`\Sigma K^2` enter the fluctuation-driven and multi-step spike-aware
initializers. Closed forms (infinite horizon):

* LIF: :math:`K[k] = c\beta^k`, :math:`\Sigma K = c/(1-\beta)`, :math:`\Sigma K^2 = c^2/(1-\beta^2)`;
* with a synaptic stage (:math:`\alpha \ne \beta`): :math:`K[k] = c(\beta^{k+1}-\alpha^{k+1})/(\beta-\alpha)`,
  :math:`\Sigma K = c/((1-\alpha)(1-\beta))`,
  :math:`\Sigma K^2 = c^2[\beta^2/(1-\beta^2) - 2\alpha\beta/(1-\alpha\beta) + \alpha^2/(1-\alpha^2)]/(\beta-\alpha)^2`;
  for :math:`\alpha = \beta`: :math:`K[k] = c(k+1)\beta^k`, :math:`\Sigma K = c/(1-\beta)^2`,
  :math:`\Sigma K^2 = c^2(1+\beta^2)/(1-\beta^2)^3`.

Neurons outside this family carry a measured ``impulse_response`` (see :func:`simulate_impulse_response`).
Non-leaky neurons (:math:`\beta = 1`, IF) have no finite infinite-horizon sums: pass ``steps=T``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Union

import torch

from .errors import NeuronSpecError, SurrogateError
from .surrogate import describe_surrogate
from .theory import RESET_TIMINGS

__all__ = ["NeuronSpec", "NeuronSpecError", "kernel_sums_from_response", "simulate_impulse_response"]

Scalar = Union[float, torch.Tensor]
RESETS = ("subtract", "hard", "none")




def _as_value(name: str, value: Any) -> Scalar:
    """Python numbers become floats, tensors become detached float64 copies (the record must not alias)."""
    if isinstance(value, bool) or value is None:
        raise NeuronSpecError(f"NeuronSpec.{name} must be a number or a tensor, got {value!r}")
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise NeuronSpecError(f"NeuronSpec.{name} must be finite, got {value}")
        return value
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.device.type == "meta":
            raise NeuronSpecError(f"NeuronSpec.{name} must be a real tensor with data, got {value.dtype} on {value.device}")
        tensor = value.detach().to("cpu", torch.float64).clone()
        # an empty tensor crashed later in min() with a RuntimeError; it holds no parameter value at all
        if tensor.numel() == 0:
            raise NeuronSpecError(f"NeuronSpec.{name} is an empty tensor (no values)")
        if not torch.isfinite(tensor).all():
            raise NeuronSpecError(f"NeuronSpec.{name} must be finite, got non-finite values")
        return tensor.item() if tensor.numel() == 1 and tensor.dim() == 0 else tensor
    raise NeuronSpecError(f"NeuronSpec.{name} must be a number or a tensor, got {type(value).__name__}")


def _min(value: Scalar) -> float:
    return float(value.min()) if isinstance(value, torch.Tensor) else value


def _max(value: Scalar) -> float:
    return float(value.max()) if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True, eq=False)
class NeuronSpec:
    """Threshold, leak, input scaling, reset and surrogate of one neuron layer.

    Args:
        threshold: θ > 0 (number, or a tensor of per-neuron values).
        beta: membrane decay per step β ∈ [0, 1] (1 = no leak, IF).
        input_scale: c > 0, the factor on the input current (SpikingJelly ``decay_input=True``: 1/τ).
        reset: ``"subtract"`` (soft), ``"hard"`` (to ``reset_value``) or ``"none"``.
        reset_value: the membrane value after a hard reset.
        surrogate: the spike function as the framework calls it (its derivative is the surrogate).
        surrogate_description: ``(kind, params)``; read from ``surrogate`` when omitted.
        synaptic_decay: α ∈ [0, 1) of a current stage before the membrane (snnTorch ``Synaptic``), or None.
        spike_scale: factor on the emitted spike (snnTorch ``graded_spikes_factor``).
        impulse_response: a measured K[k] for neurons outside the LIF family (overrides the closed forms).
        shape: the neuron layer's shape; per-neuron tensors must broadcast to it.
        name: where the spec came from, e.g. ``"snntorch.Leaky"``.
        reset_timing: when a subtractive reset acts: ``"next_step"`` (θ subtracted at the next step, undecayed:
            snnTorch), ``"after_spike"`` (right after the spike, then decayed with the membrane: SpikingJelly), or
            None when not known (what depends on it then holds under both).
    """

    threshold: Scalar
    beta: Scalar = 1.0
    input_scale: Scalar = 1.0
    reset: str = "subtract"
    reset_value: float = 0.0
    surrogate: Optional[Callable] = field(default=None, repr=False)
    surrogate_description: Optional[tuple[str, dict[str, Any]]] = None
    synaptic_decay: Optional[Scalar] = None
    spike_scale: Scalar = 1.0
    impulse_response: Optional[torch.Tensor] = field(default=None, repr=False)
    shape: Optional[tuple[int, ...]] = None
    name: str = ""
    reset_timing: Optional[str] = None

    def __post_init__(self):
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 - frozen dataclass
        for key in ("threshold", "beta", "input_scale", "spike_scale"):
            set_(key, _as_value(key, getattr(self, key)))
        set_("reset_value", _as_value("reset_value", self.reset_value))
        if isinstance(self.reset_value, torch.Tensor):
            raise NeuronSpecError("NeuronSpec.reset_value must be a single number")
        if self.synaptic_decay is not None:
            set_("synaptic_decay", _as_value("synaptic_decay", self.synaptic_decay))
        if _min(self.threshold) <= 0:
            raise NeuronSpecError(f"NeuronSpec.threshold must be > 0, got min {_min(self.threshold)}")
        if _min(self.beta) < 0 or _max(self.beta) > 1:
            raise NeuronSpecError(f"NeuronSpec.beta must lie in [0, 1], got range [{_min(self.beta)}, {_max(self.beta)}]")
        if _min(self.input_scale) <= 0:
            raise NeuronSpecError(f"NeuronSpec.input_scale must be > 0, got min {_min(self.input_scale)}")
        if self.synaptic_decay is not None and (_min(self.synaptic_decay) < 0 or _max(self.synaptic_decay) >= 1):
            raise NeuronSpecError("NeuronSpec.synaptic_decay must lie in [0, 1)")
        if self.reset not in RESETS:
            raise NeuronSpecError(f"NeuronSpec.reset must be one of {RESETS}, got {self.reset!r}")
        if self.reset_timing is not None and self.reset_timing not in RESET_TIMINGS:
            raise NeuronSpecError(f"NeuronSpec.reset_timing must be one of {RESET_TIMINGS} or None, "
                                  f"got {self.reset_timing!r}")
        if self.surrogate is not None and not callable(self.surrogate):
            raise NeuronSpecError(f"NeuronSpec.surrogate must be callable, got {type(self.surrogate).__name__}")
        if self.surrogate_description is None and self.surrogate is not None:
            try:
                set_("surrogate_description", describe_surrogate(self.surrogate))
            except SurrogateError as exc:
                raise NeuronSpecError(f"NeuronSpec.surrogate: {exc}") from exc
        if self.impulse_response is not None:
            response = _as_value("impulse_response", torch.as_tensor(self.impulse_response))
            response = torch.as_tensor(response, dtype=torch.float64)
            if response.dim() == 0 or response.shape[0] == 0:
                raise NeuronSpecError("NeuronSpec.impulse_response must have a time dimension first, shape [K, ...]")
            set_("impulse_response", response)
        if self.shape is not None:
            try:
                set_("shape", tuple(int(n) for n in self.shape))
            except (TypeError, ValueError) as exc:
                raise NeuronSpecError(f"NeuronSpec.shape must be a tuple of ints, got {self.shape!r}") from exc
        self._check_shapes()

    def _check_shapes(self) -> None:
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        tensors["impulse_response"] = None if self.impulse_response is None else self.impulse_response[0]
        tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        try:
            torch.broadcast_shapes(*(t.shape for t in tensors.values()))
        except RuntimeError as exc:
            shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in tensors.items())
            raise NeuronSpecError(f"NeuronSpec: per-neuron tensors do not broadcast together: {shapes}") from exc
        if self.shape is not None:
            for key, tensor in tensors.items():
                try:
                    ok = torch.broadcast_shapes(tensor.shape, self.shape) == torch.Size(self.shape)
                except RuntimeError:
                    ok = False
                if not ok:
                    raise NeuronSpecError(
                        f"NeuronSpec.{key} has shape {tuple(tensor.shape)}, which does not broadcast to the "
                        f"neuron layer's shape {self.shape}"
                    )

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_tau(cls, tau: Scalar, decay_input: bool = True, **kwargs) -> NeuronSpec:
        """SpikingJelly's LIF form ``H = V + (X - (V - v_reset))/τ``: β = 1 − 1/τ, c = 1/τ (or 1 when
        ``decay_input=False``). τ must be ≥ 1."""
        tau = _as_value("tau", tau)
        if _min(tau) < 1:
            raise NeuronSpecError(f"tau must be >= 1, got min {_min(tau)}")
        inv = 1.0 / tau
        return cls(beta=1.0 - inv, input_scale=inv if decay_input else 1.0, **kwargs)

    def response(self, steps: int) -> torch.Tensor:
        """The first ``steps`` values of the impulse response K, shape ``[steps, *parameter shape]``."""
        if steps < 1:
            raise NeuronSpecError(f"steps must be >= 1, got {steps}")
        if self.impulse_response is not None:
            available = self.impulse_response.shape[0]
            if steps > available:
                raise NeuronSpecError(f"the measured impulse response has {available} steps, {steps} requested")
            return self.impulse_response[:steps]
        k = torch.arange(steps, dtype=torch.float64)
        beta = torch.as_tensor(self.beta, dtype=torch.float64)
        k = k.reshape((steps,) + (1,) * beta.dim())
        membrane = beta ** k  # response of u to a unit input, then the synaptic stage convolves it
        if self.synaptic_decay is not None:
            alpha = torch.as_tensor(self.synaptic_decay, dtype=torch.float64)
            current = alpha ** k.reshape((steps,) + (1,) * alpha.dim())
            shape = torch.broadcast_shapes(membrane.shape[1:], current.shape[1:])
            membrane, current = membrane.expand((steps,) + shape), current.expand((steps,) + shape)
            # K[k] = sum_j alpha^j beta^(k-j): a causal convolution along time.
            out = torch.zeros((steps,) + shape, dtype=torch.float64)
            for j in range(steps):
                out[j:] += current[j] * membrane[: steps - j]
            membrane = out
        return torch.as_tensor(self.input_scale, dtype=torch.float64) * membrane

    def kernel_sums(self, steps: Optional[int] = None) -> tuple[Scalar, Scalar]:
        """(ΣK, ΣK²) of the impulse response: over ``steps`` time steps, or the infinite horizon when None."""
        if steps is not None:
            response = self.response(int(steps))
            return _scalar(response.sum(0)), _scalar((response * response).sum(0))
        if self.impulse_response is not None:
            tail = self.impulse_response[-1].abs().max() / self.impulse_response.abs().max().clamp_min(1e-300)
            if tail > 1e-6:
                raise NeuronSpecError(
                    f"{self.name or 'neuron'}: the measured impulse response has not decayed (last/peak = {tail:.2g}); "
                    "pass steps=T for a finite horizon"
                )
            return self.kernel_sums(self.impulse_response.shape[0])
        if _max(self.beta) >= 1:
            raise NeuronSpecError(
                f"{self.name or 'neuron'} has no leak (beta = 1, integrate-and-fire): its impulse response never decays, "
                "so its kernel sums are infinite; pass steps=T"
            )
        b, c = torch.as_tensor(self.beta, dtype=torch.float64), torch.as_tensor(self.input_scale, dtype=torch.float64)
        if self.synaptic_decay is None:
            return _scalar(c / (1 - b)), _scalar(c * c / (1 - b * b))
        a = torch.as_tensor(self.synaptic_decay, dtype=torch.float64)
        total = c / ((1 - a) * (1 - b))
        same = (a - b).abs() < 1e-9
        gap = torch.where(same, torch.ones_like(a - b), b - a)
        distinct = (b * b / (1 - b * b) - 2 * a * b / (1 - a * b) + a * a / (1 - a * a)) / (gap * gap)
        equal = (1 + b * b) / (1 - b * b) ** 3
        return _scalar(total), _scalar(c * c * torch.where(same, equal, distinct))

    def with_(self, **changes) -> NeuronSpec:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "surrogate" in changes and "surrogate_description" not in changes:
            values["surrogate_description"] = None
        values.update(changes)
        return NeuronSpec(**values)


def _scalar(value: torch.Tensor) -> Scalar:
    return value.item() if value.dim() == 0 else value


def kernel_sums_from_response(response: Union[Sequence[float], torch.Tensor], steps: Optional[int] = None):
    r""":math:`(\Sigma K, \Sigma K^2)` of an impulse response :math:`K[k]`, the membrane's response at step
    :math:`k` to a unit input at step 0.

    Args:
        response: :math:`K[0], K[1], \ldots`
        steps: sum over the first ``steps`` entries only (a finite horizon T).

    Returns:
        tuple[float, float]: :math:`\sum_k K[k]` and :math:`\sum_k K[k]^2`.

    Example:
        >>> import snn_initplug as sip
        >>> sip.neuron.kernel_sums_from_response([1.0, 0.5, 0.25])
        (1.75, 1.3125)
    """
    response = torch.as_tensor(response, dtype=torch.float64)
    if steps is not None:
        response = response[: int(steps)]
    return _scalar(response.sum(0)), _scalar((response * response).sum(0))


def simulate_impulse_response(
    step: Callable[[torch.Tensor], torch.Tensor],
    steps: Optional[int] = None,
    max_steps: int = 100_000,
    rtol: float = 1e-10,
) -> torch.Tensor:
    r"""Record K[k] by driving a neuron's own update with a unit input at k = 0 and zeros after.

    ``step(x)`` must advance the neuron by one step with input ``x`` (a float64 scalar tensor) and return its
    membrane potential, with spiking disabled (for example the threshold set to infinity). With ``steps``
    the response is recorded for exactly that many steps; otherwise until it has decayed below
    ``rtol`` of its peak for 16 steps in a row, and an error is raised after ``max_steps``.

    Args:
        step: advances the neuron by one step and returns its membrane.
        steps: record exactly this many steps.
        max_steps: give up after this many steps when ``steps`` is None.
        rtol: the decay, relative to the peak, that ends the record.

    Returns:
        Tensor: :math:`K[0], K[1], \ldots` (float64).

    Example:
        A leaky integrator :math:`u_t = 0.5\,u_{t-1} + x_t`:

        >>> import torch
        >>> import snn_initplug as sip
        >>> state = {"u": torch.zeros((), dtype=torch.float64)}
        >>> def step(x):
        ...     state["u"] = 0.5 * state["u"] + x
        ...     return state["u"]
        >>> sip.neuron.simulate_impulse_response(step, steps=4)
        tensor([1.0000, 0.5000, 0.2500, 0.1250], dtype=torch.float64)
    """
    values = []
    quiet = 0
    limit = int(steps) if steps is not None else int(max_steps)
    for k in range(limit):
        x = torch.tensor(1.0 if k == 0 else 0.0, dtype=torch.float64)
        u = torch.as_tensor(step(x), dtype=torch.float64).detach().clone()
        values.append(u)
        if steps is None:
            peak = max(float(v.abs().max()) for v in values)
            quiet = quiet + 1 if float(u.abs().max()) <= rtol * peak else 0
            if quiet >= 16:
                break
    else:
        if steps is None:
            raise NeuronSpecError(
                f"the impulse response did not decay within {max_steps} steps (a non-leaky neuron?); pass steps=T"
            )
    return torch.stack(values)
