r"""snnTorch adapters: read the live parameters of snnTorch neurons into a :class:`NeuronSpec`.

Imported by the registry only once ``snntorch`` is in ``sys.modules``. Written against snnTorch 1.0.0 and
defensive about 0.9.x (see :func:`_reset_of`). The equations below are what the installed code computes,
not what its docstrings say; :math:`R_t = H(U_{t-1} - \theta)` is the detached reset signal computed from
the *previous* membrane, :math:`S_t = \text{gsf}\cdot\text{spike\_grad}(U_t - \theta)` the output, and
every decay is clamped to [0, 1] inside ``forward`` (so the spec reads ``.clamp(0, 1)`` too).

``Leaky`` (and ``RLeaky``, which adds :math:`V\!\cdot\!S_{t-1}` or ``recurrent(S_{t-1})`` to the input)::

    subtract:  U_t = β U_{t-1} + I_t − R_t θ
    zero:      U_t = β (1 − R_t) U_{t-1} + I_t          (RLeaky: (1 − R_t)(β U_{t-1} + I_t + rec))
    none:      U_t = β U_{t-1} + I_t

The input is never multiplied by (1 − β), so c = 1 (SpikingJelly ``decay_input=False``).

``Synaptic`` / ``RSynaptic``: :math:`\text{syn}_t = α\,\text{syn}_{t-1} + I_t` (never reset), then
``U_t = β U_{t-1} + syn_t`` with the same three resets (``zero`` also discards the new ``syn_t``): the
canonical synaptic form with α = ``alpha.clamp(0, 1)`` and c = 1.

``Alpha``: two currents and no membrane memory of its own::

    I_exc[t] = α I_exc[t-1] + I_t,   I_inh[t] = β I_inh[t-1] − I_t,   U_t = τ (I_exc[t] + I_inh[t])
    τ = ln β / (ln β − ln α)          (the code's ``log(α)/(log(β) − log(α)) + 1``; α > β)

so K[k] = τ(α^k − β^k): K[0] = 0, one step later than the canonical synaptic form. That delay does not fit
the canonical form, so the adapter records K by running the module itself (threshold unreachable) and passes
``impulse_response``; ``beta``/``synaptic_decay``/``input_scale`` hold α, β and τ(α − β), the canonical
parameters whose infinite-horizon sums equal those of the delayed response.

``Lapicque`` ignores β in ``forward``: ``U_t = I_t R dt/(RC) + (1 − dt/(RC)) U_{t-1}`` (resets as RLeaky),
so the decay is 1 − dt/(RC) and the input gain dt/C. Built from β alone, R = 1 and C = dt/ln(1/β): the
decay is 1 + ln β (0.8946 for β = 0.9), not β.

``LeakyParallel`` is a plain ``nn.Module`` around ``nn.RNN(nonlinearity="relu")``: with the input projection
W_ih (an internal weight) and the diagonal W_hh = β, ``U_t = relu(W_ih x_t + b + β U_{t-1})``, no reset.

``Alpha``'s resets act on the currents: ``zero`` clears all three states after a spike (reported "hard");
``subtract`` removes θ from I_exc and clears I_inh, a rule of its own, reported as "subtract".

Reset: snnTorch picks the update rule (``state_function``) once in ``__init__``; setting
``reset_mechanism`` later changes the string and ``reset_mechanism_val`` but not that rule, so the adapter
trusts ``state_function``, except with ``reset_delay=False`` (see :func:`_reset_of`).
"""
from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Sequence
from typing import Any, Callable, Optional

import snntorch
import torch
import torch.nn as nn

from ..neuron import NeuronSpec, NeuronSpecError, simulate_impulse_response
from ..surrogate import describe_surrogate, shape_parameter
from . import (
    FrameworkNeuron,
    InternalWeight,
    SurrogateLever,
    UnsupportedNeuronError,
    register_neuron,
    register_unsupported,
    scale_tensor_in_place,
)

FRAMEWORK = "snntorch"

# snnTorch's three update rules, by method name, and by the reset_mechanism_val buffer / string (0.9.x).
_RESET_BY_STATE_FUNCTION = {"_base_sub": "subtract", "_base_zero": "hard", "_base_int": "none"}
_RESET_BY_VALUE = {0: "subtract", 1: "hard", 2: "none"}
_RESET_BY_NAME = {"subtract": "subtract", "zero": "hard", "none": "none"}

# How many steps to record when a response never decays (a decay clamped to 1): long enough for any
# realistic number of time steps, small enough for per-neuron tensors.
_NON_DECAYING_HORIZON = 2048


# ------------------------------------------------------------------------------------------------
# reading values
# ------------------------------------------------------------------------------------------------
def _name(module: FrameworkNeuron) -> str:
    return f"snntorch.{type(module).__name__}"


def _live(value) -> torch.Tensor:
    """A detached float64 CPU copy of a buffer/Parameter (or number)."""
    return torch.as_tensor(value).detach().to("cpu", torch.float64)


def _compact(tensor: torch.Tensor):
    """A single value (0-d or shape (1,)) becomes a float: it is shared by all neurons."""
    return float(tensor.reshape(())) if tensor.numel() == 1 else tensor


def _layer_shape(*values) -> Optional[tuple[int, ...]]:
    """The broadcast shape of the per-neuron tensors, or None when every value is shared."""
    shapes = [v.shape for v in values if isinstance(v, torch.Tensor) and v.numel() > 1]
    return tuple(torch.broadcast_shapes(*shapes)) if shapes else None


def _decay(value) -> torch.Tensor:
    # forward uses `.clamp(0, 1)`, so a learned beta of 1.2 acts as 1 and -0.1 as 0
    decay = _live(value).clamp(0, 1)
    return decay.reshape(()) if decay.numel() == 1 else decay  # shared: no spurious neuron axis in responses


def _reset_of(module: FrameworkNeuron) -> str:
    """The reset actually applied: the bound update rule first (1.0.0 fixes it at construction), then the
    ``reset_mechanism_val`` buffer and the ``reset_mechanism`` string (older versions switch on those).

    Exception: with ``reset_delay=False`` forward also resets right after the spike, switching on
    ``reset_mechanism_val`` (which the setter does update). That immediate reset acts first, so the delayed
    rule of ``state_function`` then rarely sees a membrane above threshold: the buffer decides.
    """
    value = getattr(module, "reset_mechanism_val", None)
    value = int(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else None
    if getattr(module, "reset_delay", True) is False and value in (0, 1):
        return _RESET_BY_VALUE[value]
    rule = getattr(getattr(module, "state_function", None), "__name__", None)
    if rule in _RESET_BY_STATE_FUNCTION:
        return _RESET_BY_STATE_FUNCTION[rule]
    if value in _RESET_BY_VALUE:
        return _RESET_BY_VALUE[value]
    name = getattr(module, "reset_mechanism", None)
    if name in _RESET_BY_NAME:
        return _RESET_BY_NAME[name]
    raise NeuronSpecError(f"{_name(module)}: cannot tell its reset mechanism (state_function {rule!r})")


def _common(module: FrameworkNeuron) -> dict:
    """Threshold, spike scale and surrogate, shared by every snnTorch neuron."""
    return dict(
        threshold=_compact(_live(module.threshold)),
        spike_scale=_compact(_live(getattr(module, "graded_spikes_factor", 1.0))),
        # the real closure (or the bypass with surrogate_disable=True); the surrogate analysis judges it
        surrogate=module.spike_grad,
        name=_name(module),
    )


def _spec(**values) -> NeuronSpec:
    values.setdefault("shape", _layer_shape(*values.values()))
    return NeuronSpec(**values)


# ------------------------------------------------------------------------------------------------
# running the module itself (for responses outside the canonical form)
# ------------------------------------------------------------------------------------------------
def _silent_copy(module: FrameworkNeuron) -> FrameworkNeuron:
    """A shallow copy that shares the parameter tensors but has its own slots, with spiking disabled.

    Not ``deepcopy``: state tensors left by a training step are non-leaf and cannot be deep-copied.
    """
    clone = copy.copy(module)
    clone.__dict__.update(
        _parameters=dict(module._parameters), _buffers=dict(module._buffers), _modules=dict(module._modules)
    )
    # snnTorch stores its update rule as a bound method (``state_function``): rebind such methods to the
    # copy, or running the copy would read and write the original's state
    for key, value in list(clone.__dict__.items()):
        if isinstance(value, types.MethodType) and value.__self__ is module:
            clone.__dict__[key] = types.MethodType(value.__func__, clone)
    device = module.threshold.device
    # an unreachable threshold and a plain Heaviside: no spike, no reset, whatever surrogate the neuron uses.
    # Finite, because the subtract rules compute reset·θ and 0·inf is nan.
    clone._parameters.pop("threshold", None)
    clone._buffers["threshold"] = torch.tensor(1e300, dtype=torch.float64, device=device)
    clone.spike_grad = lambda x: (x > 0).to(x.dtype)
    clone.inhibition = False  # winner-take-all needs a batch dimension and spikes anyway
    clone.state_quant = False  # quantisation is not part of the linear response
    return clone


def _measure_response(
    module: FrameworkNeuron, states: Sequence[str], shape: tuple[int, ...], steps: Optional[int] = None
) -> torch.Tensor:
    """K[k] of ``module``'s own forward for a unit input at k = 0, per neuron of ``shape`` (until it has
    decayed, or for ``steps`` steps)."""
    clone = _silent_copy(module)
    device = module.threshold.device
    for state in states:
        setattr(clone, state, torch.zeros(shape, dtype=torch.float64, device=device))

    def step(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clone.forward(x.to(device).expand(shape).clone())  # forward, not __call__: no user hooks
        return clone.mem.detach().to("cpu", torch.float64)

    return simulate_impulse_response(step, steps=steps)


def _synaptic_response(alpha: torch.Tensor, beta: torch.Tensor, steps: int) -> torch.Tensor:
    """K[k] = Σ_j α^j β^(k−j), for α = 1 where the canonical form (α < 1) cannot hold it."""
    shape = torch.broadcast_shapes(alpha.shape, beta.shape)
    syn = torch.ones(shape, dtype=torch.float64)
    mem = torch.zeros(shape, dtype=torch.float64)
    out = []
    for _ in range(steps):
        mem = beta * mem + syn
        out.append(mem)
        syn = alpha * syn
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------
# to_spec functions
# ------------------------------------------------------------------------------------------------
def leaky_spec(module: FrameworkNeuron) -> NeuronSpec:
    """``Leaky`` and ``RLeaky``: c = 1, β = beta.clamp(0, 1)."""
    return _spec(beta=_compact(_decay(module.beta)), input_scale=1.0, reset=_reset_of(module), **_common(module))


def synaptic_spec(module: FrameworkNeuron) -> NeuronSpec:
    """``Synaptic`` and ``RSynaptic``: α = alpha.clamp(0, 1) as a current stage, c = 1."""
    alpha, beta = _decay(module.alpha), _decay(module.beta)
    values = dict(beta=_compact(beta), input_scale=1.0, reset=_reset_of(module), **_common(module))
    if float(alpha.max()) < 1:
        return _spec(synaptic_decay=_compact(alpha), **values)
    # alpha clamped to 1: the current never decays, which the canonical form (α < 1) cannot hold
    shape = _layer_shape(alpha, beta, values["threshold"], values["spike_scale"])
    return _spec(impulse_response=_synaptic_response(alpha, beta, _NON_DECAYING_HORIZON), shape=shape, **values)


def alpha_spec(module: FrameworkNeuron) -> NeuronSpec:
    """``Alpha``: the impulse response measured on the module (K[0] = 0, a one-step delay)."""
    alpha, beta = _decay(module.alpha), _decay(module.beta)
    # τ exactly as forward writes it (also finite for β clamped to 0, where ln β/(ln β − ln α) is nan)
    tau = torch.log(alpha) / (torch.log(beta) - torch.log(alpha)) + 1
    common = _common(module)
    shape = _layer_shape(alpha, beta, common["threshold"], common["spike_scale"])
    # α clamped to 1 leaves the excitatory current constant: the response never settles
    steps = None if float(alpha.max()) < 1 else _NON_DECAYING_HORIZON
    response = _measure_response(module, ("syn_exc", "syn_inh", "mem"), _layer_shape(alpha, beta) or (), steps)
    return _spec(
        beta=_compact(alpha),  # the slow (excitatory) decay dominates the membrane
        synaptic_decay=_compact(beta),
        input_scale=_compact(tau * (alpha - beta)),
        reset=_reset_of(module),
        impulse_response=response,
        shape=shape,
        **common,
    )


def lapicque_spec(module: FrameworkNeuron) -> NeuronSpec:
    """``Lapicque``: decay 1 − dt/(RC) and input gain R·dt/(RC), from the R, C, time_step buffers."""
    if not (hasattr(module, "R") and hasattr(module, "C")):
        # snnTorch registers R and C only for some argument combinations (not for beta, R and C all given),
        # and its own forward then fails as well
        raise NeuronSpecError(f"{_name(module)} has no R/C buffers, so snnTorch cannot run it either")
    r, c, dt = _live(module.R), _live(module.C), _live(module.time_step)
    decay = 1 - dt / (r * c)
    if float(decay.min()) < 0 or float(decay.max()) > 1:
        raise NeuronSpecError(
            f"{_name(module)}: its membrane decay 1 - dt/(RC) lies in [{float(decay.min()):.4g}, "
            f"{float(decay.max()):.4g}], outside [0, 1] (time_step larger than RC?)"
        )
    gain = r * dt / (r * c)
    return _spec(beta=_compact(decay), input_scale=_compact(gain), reset=_reset_of(module), **_common(module))


def leaky_parallel_spec(module: FrameworkNeuron) -> NeuronSpec:
    """``LeakyParallel``: β = the diagonal of ``rnn.weight_hh_l0``, no reset, c = 1 (W_ih is internal)."""
    # forward does not clamp W_hh. Below 0 the ReLU zeroes the membrane after a positive input, so 0 is the
    # exact response; above 1 the membrane grows and 1 (no leak) is the nearest value the spec can hold.
    beta = _live(torch.diagonal(module.rnn.weight_hh_l0)).clamp(0, 1)
    return _spec(beta=beta, input_scale=1.0, reset="none", shape=(module.rnn.hidden_size,), **_common(module))


def _unsupported(reason: str) -> Callable[[nn.Module], NeuronSpec]:
    def to_spec(module: FrameworkNeuron) -> NeuronSpec:
        raise UnsupportedNeuronError(
            f"not supported yet: {type(module).__module__}.{type(module).__qualname__} ({FRAMEWORK} neuron): "
            f"{reason}; register it with snn_initplug.register_neuron(cls, to_spec)"
        )

    return to_spec


# ------------------------------------------------------------------------------------------------
# internal weights
# ------------------------------------------------------------------------------------------------
def recurrent_weights(module: FrameworkNeuron) -> list[InternalWeight]:
    """``RLeaky``/``RSynaptic``: ``recurrent.weight`` (Linear or Conv2d), or the one-to-one gain ``V``."""
    weight = getattr(getattr(module, "recurrent", None), "weight", None)
    if isinstance(weight, nn.Parameter):
        return [InternalWeight("recurrent.weight", "recurrent", weight[0].numel())]
    if isinstance(getattr(module, "V", None), nn.Parameter):  # learn_recurrent=True; a buffer V is fixed
        return [InternalWeight("V", "recurrent", 1)]
    return []


def leaky_parallel_weights(module: FrameworkNeuron) -> list[InternalWeight]:
    """The input projection; W_hh only when dense (``weight_hh_enable=True``), as then it is a recurrent
    weight. Diagonal, it holds the decays β, which an initializer must not overwrite."""
    rnn = module.rnn
    weights = [InternalWeight("rnn.weight_ih_l0", "input", rnn.weight_ih_l0.shape[1])]
    hh = rnn.weight_hh_l0.detach()
    if bool((hh - torch.diag_embed(torch.diagonal(hh))).any()):
        weights.append(InternalWeight("rnn.weight_hh_l0", "recurrent", hh.shape[1]))
    return weights


# ------------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------------
_SUPPORTED = (
    ("Leaky", leaky_spec, None),
    ("RLeaky", leaky_spec, recurrent_weights),
    ("Synaptic", synaptic_spec, None),
    ("RSynaptic", synaptic_spec, recurrent_weights),
    ("Alpha", alpha_spec, None),
    ("Lapicque", lapicque_spec, None),
    ("LeakyParallel", leaky_parallel_spec, leaky_parallel_weights),
)

# Subclasses of supported classes whose dynamics differ: without an entry they would inherit the parent's
# adapter silently.
_UNSUPPORTED_SUBCLASSES = (
    ("DeltaLeaky", "it spikes on |ΔU| > delta_threshold, not on U > threshold, and never resets"),
)


def _to_rest(module: FrameworkNeuron) -> None:
    """snnTorch states to zero (``reset_mem``; ``LeakyParallel`` keeps none)."""
    if callable(getattr(module, "reset_mem", None)):
        module.reset_mem()


def _time_major(module: FrameworkNeuron) -> bool:
    """``LeakyParallel`` runs a whole ``[T, B, ...]`` sequence through ``nn.RNN`` in one call."""
    return isinstance(module, getattr(snntorch, "LeakyParallel", ()))


def _scale_threshold(module: nn.Module, factor: float):
    """``threshold`` is a tensor (a buffer, or a Parameter with ``learn_threshold=True``): scaled in place, so
    a per-neuron threshold keeps its shape and the optimizer keeps its Parameter. Returns the undo."""
    threshold: torch.Tensor = getattr(module, "threshold")  # noqa: B009 - a tensor attribute, typed for mypy
    return scale_tensor_in_place(threshold, factor)


def _surrogate_lever(module: nn.Module) -> Optional[SurrogateLever]:
    """``spike_grad`` built by a factory of ``snntorch.surrogate`` (``atan``, ``sigmoid``, ``fast_sigmoid``,
    ...): the family is that factory, rebuilt with the closure's parameters and a new shape; each neuron gets
    its own closure (one passed to several neurons is never changed). Anything else (``custom_surrogate``, a
    user function, ``LeakyParallel``'s ``ATan.apply``): None."""
    current = module.spike_grad
    if not inspect.isfunction(current):
        return None
    kind, params = describe_surrogate(current)
    factory = getattr(snntorch.surrogate, kind, None)
    if not (inspect.isfunction(factory) and factory.__module__ == snntorch.surrogate.__name__
            and current.__qualname__.startswith(f"{kind}.<locals>.")):
        return None
    parameter = shape_parameter(params)
    accepted = inspect.signature(factory).parameters
    if parameter is None or not set(params) <= set(accepted):
        return None

    def at(value: float) -> Callable:
        return factory(**{**params, parameter: float(value)})

    def install(fn: Callable) -> None:
        module.spike_grad = fn

    return SurrogateLever(parameter, float(params[parameter]), current, at, install)


# snnTorch calls spike_grad on the previous membrane first (the detached reset signal), then on the new one
_RUNS: dict[str, Any] = dict(reset=_to_rest, time_major=_time_major, fires_on_last_call=True,
                             scale_threshold=_scale_threshold, surrogate_lever=_surrogate_lever)


def _register() -> None:
    for name, to_spec, weights in _SUPPORTED:
        cls = getattr(snntorch, name, None)  # absent in older versions
        if cls is not None:
            register_neuron(cls, to_spec, internal_weights=weights, framework=FRAMEWORK, **_RUNS)
    for name, reason in _UNSUPPORTED_SUBCLASSES:
        cls = getattr(snntorch, name, None)
        if cls is not None:
            register_neuron(cls, _unsupported(reason), framework=FRAMEWORK)
    # every other SpikingNeuron (SLSTM, SConv2dLSTM, StateLeaky, LinearLeaky, AssociativeLeaky, ...)
    register_unsupported(snntorch.SpikingNeuron, FRAMEWORK)


_register()
