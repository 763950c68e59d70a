r"""SpikingJelly neurons (2.x and 0.0.0.0.14) read into :class:`~snn_initplug.neuron.NeuronSpec`.

Imported by the registry only once ``spikingjelly`` is in ``sys.modules``. Both versions keep the neurons in
``spikingjelly.activation_based.neuron``; every difference between them is detected from the classes and
attributes that exist, never from a version string.

The equations as SpikingJelly implements them (``H`` is the membrane after charging, ``V`` after the reset,
:math:`v_r` = ``v_reset``, read as 0 when it is None, :math:`\theta` = ``v_threshold``):

.. math::

    \text{IF:}\quad & H[t] = V[t-1] + X[t]

    \text{LIF, decay\_input=True:}\quad & H[t] = V[t-1] + \big(X[t] - (V[t-1] - v_r)\big)/\tau

    \text{LIF, decay\_input=False:}\quad & H[t] = V[t-1] - (V[t-1] - v_r)/\tau + X[t]

    \text{ParametricLIF:}\quad & \text{as LIF with } 1/\tau = \sigma(w) \text{ (} w \text{ is learned)}

    \text{CUBALIF:}\quad & I[t] = \alpha_c I[t-1] + X[t], \qquad H[t] = \beta_v V[t-1] + I[t]

    \text{fire:}\quad & S[t] = \Theta(H[t] - \theta) \text{ (fires at equality; backward: surrogate}'(H - \theta))

    \text{reset:}\quad & V[t] = S[t]\,v_r + (1 - S[t])\,H[t] \text{ (hard, float } v_r),
                          \qquad V[t] = H[t] - S[t]\,\theta \text{ (soft, } v_r = \text{None)}

So the canonical form :math:`u[t] = \beta u[t-1] + c\,x[t]` holds with :math:`u = H`: IF :math:`\beta = c = 1`;
LIF :math:`\beta = 1 - 1/\tau` and :math:`c = 1/\tau` (``decay_input=True``) or 1; CUBALIF adds the synaptic
stage :math:`\alpha = \alpha_c`, :math:`\beta = \beta_v`, :math:`c = 1`. SpikingJelly's soft reset subtracts
:math:`\theta` *before* the next decay (:math:`H[t+1] = \beta(H[t] - \theta S[t]) + c X[t+1]`).

Reset mapping: ``v_reset=None`` gives ``reset="subtract"``; a float gives ``reset="hard"``,
``reset_value=v_reset``. ``step_mode`` ('s'/'m') and 0.0.0.0.14's ``backend`` ('torch'/'cupy') select an
implementation of the same equations, so they are not read.

Left unsupported (reported as "not supported yet"), because their update is not the canonical form: QIF, EIF,
Izhikevich / AdaptBaseNode (non-linear or adaptive), KLIF (``relu(k H)``), RAF (resonant, a rotation), LIAF
(analog output), ILIF (integer spike counts fired on ``H/θ``), Ternary IF/LIF (a second, negative threshold),
ComplementaryLIF (reset by ``θ + σ(m)``), MPBN LIF (batch norm on the membrane); and any subclass of a
supported class that replaces its update methods.
"""
from __future__ import annotations

import copy
import sys
from typing import Any, Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from ..neuron import NeuronSpec
from ..surrogate import describe_surrogate, shape_parameter
from . import (
    FrameworkNeuron,
    SurrogateLever,
    UnsupportedNeuronError,
    register_neuron,
    register_unsupported,
    scale_tensor_in_place,
)

FRAMEWORK = "spikingjelly"

# The methods that carry a neuron's update in either version (0.0.0.0.14 and the 2.x ``Simple*`` classes:
# neuronal_charge/fire/reset; 2.x: the *_functional_forward transitions). A subclass that replaces one of them
# has its own dynamics, which the parent's reader would misdescribe (LIAFNode and ILIFNode subclass LIFNode).
_UPDATE_METHODS = (
    "forward",
    "single_step_forward",
    "multi_step_forward",
    "single_step_functional_forward",
    "multi_step_functional_forward",
    "neuronal_charge",
    "neuronal_fire",
    "neuronal_reset",
)


def _common(m: FrameworkNeuron) -> dict:
    """Threshold, reset and surrogate: the same attributes on every supported class, in both versions."""
    fields = dict(
        threshold=m.v_threshold,
        # The module's own object, not a copy: the default is one instance shared by every neuron of a class
        # (a default argument), and reading it must neither detach a neuron from it nor change it.
        surrogate=m.surrogate_function,
        name=f"{FRAMEWORK}.{type(m).__name__}",
    )
    fields.update(_reset(m.v_reset))
    return fields


def _reset(v_reset) -> dict:
    if v_reset is None:
        return dict(reset="subtract", reset_decays=True)  # V = H − θ·S, then the next step decays V
    # Hard reset. For LIF/PLIF with v_reset != 0 SpikingJelly also decays toward v_reset, which in the
    # canonical form is a constant drive (1 - beta) * v_reset; it does not depend on the input, so the
    # impulse response (the kernel) is unaffected and the spec does not carry it.
    return dict(reset="hard", reset_value=float(v_reset))


def _read_if(m: FrameworkNeuron) -> NeuronSpec:
    # HalfThresholdIFNode is this IF too: it only starts at V = θ/2, an input-independent offset.
    return NeuronSpec(beta=1.0, input_scale=1.0, **_common(m))


def _read_lif(m: FrameworkNeuron) -> NeuronSpec:
    # tau is read live: SpikingJelly reads m.tau at call time, so a changed tau changes the dynamics.
    return NeuronSpec.from_tau(m.tau, decay_input=bool(m.decay_input), **_common(m))


def _read_plif(m: FrameworkNeuron) -> NeuronSpec:
    # 1/tau = sigmoid(w) with w the learned parameter, read at every call so training updates are seen.
    # float64 before the sigmoid keeps beta = 1 - sigmoid(w) accurate for large w.
    tau = 1.0 / torch.sigmoid(m.w.detach().to(torch.float64))
    return NeuronSpec.from_tau(tau, decay_input=bool(m.decay_input), **_common(m))


def _read_cuba_lif(m: FrameworkNeuron) -> NeuronSpec:
    # The current stage decays by c_decay and the membrane by v_decay, with no input scaling.
    return NeuronSpec(beta=m.v_decay, input_scale=1.0, synaptic_decay=m.c_decay, **_common(m))


# Class name -> reader. Looked up by name because each version has a different set (2.x adds
# HalfThresholdIFNode, CUBALIFNode, the online-learning LIFs and the Simple* teaching classes).
_READERS = {
    "IFNode": _read_if,
    "HalfThresholdIFNode": _read_if,
    "SimpleIFNode": _read_if,
    "LIFNode": _read_lif,
    "SimpleLIFNode": _read_lif,
    # OTTT/SLTT: LIF forward exactly; in training they detach V between steps (no gradient through time).
    "OTTTLIFNode": _read_lif,
    "SLTTLIFNode": _read_lif,
    "ParametricLIFNode": _read_plif,
    "CUBALIFNode": _read_cuba_lif,
}


def _replaced_update(module: FrameworkNeuron, cls: type):
    """The first update method that ``type(module)`` defines differently from ``cls``, or None."""
    for name in _UPDATE_METHODS:
        if getattr(type(module), name, None) is not getattr(cls, name, None):
            return name
    return None


def _checked(cls: type, reader):
    """``reader`` for ``cls`` and for subclasses that keep its update; others raise UnsupportedNeuronError."""

    def to_spec(module: FrameworkNeuron) -> NeuronSpec:
        replaced = _replaced_update(module, cls)
        if replaced is not None:
            klass = type(module)
            raise UnsupportedNeuronError(
                f"not supported yet: {klass.__module__}.{klass.__qualname__} ({FRAMEWORK} neuron; it replaces "
                f"{cls.__name__}.{replaced}, so its dynamics are not {cls.__name__}'s); register it with "
                "snn_initplug.register_neuron(cls, to_spec)"
            )
        return reader(module)

    return to_spec


def _to_rest(module: FrameworkNeuron) -> None:
    """Memories back to their defaults."""
    module.reset()


def _time_major(module: FrameworkNeuron) -> bool:
    """``step_mode='m'``: one call takes the whole ``[T, B, ...]`` sequence."""
    return getattr(module, "step_mode", "s") == "m"


def _surrogate_path(module: FrameworkNeuron):
    """0.0.0.0.14 runs TorchScript kernels without the surrogate in eval mode and CuPy kernels that need the
    surrogate's CUDA code: the neuron alone (not BatchNorm or Dropout) goes to training mode and the ``torch``
    backend, the same equations step by step. 2.x takes its torch reference path for any surrogate defined
    outside its surrogate module, but refuses that path on CUDA while an ``SJ_*_CUDA_IMPLEMENTATION`` variable
    names one implementation (even ``torch``): see :func:`_cuda_choice_on_auto`. Returns the undo function."""
    if not any(name.startswith("jit_eval") for name in dir(type(module))):
        return _cuda_choice_on_auto()
    training, backend = module.training, getattr(module, "backend", None)
    module.training = True
    if backend not in (None, "torch"):
        module.backend = "torch"

    def undo():
        module.training = training
        if backend not in (None, "torch"):
            module.backend = backend

    return undo


def _forced_cuda_selections() -> list:
    """SpikingJelly 2.x's per-operator CUDA selections (``spikingjelly._ops.<op>._selection``) that an
    ``SJ_<OP>_CUDA_IMPLEMENTATION`` variable set to something other than ``auto``."""
    forced = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("spikingjelly._ops.") and name.count(".") == 2:
            selection = getattr(mod, "_selection", None)
            requested = getattr(selection, "_requested", None)
            if isinstance(requested, str) and requested != "auto":
                forced.append(selection)
    return forced


def _cuda_choice_on_auto():
    """For one pass, let 2.x's forced CUDA selections read ``auto``: its reference path (the only one that calls
    a Python spike function) raises ``SJ_LIF_CUDA_IMPLEMENTATION='torch' cannot run this execution profile``
    otherwise. The choices cached meanwhile are dropped, so the user's implementation serves every later call.
    Returns the undo function."""
    saved = [(s, s._requested, dict(s._selections)) for s in _forced_cuda_selections()]
    for selection, _, _ in saved:
        selection._requested = "auto"

    def undo():
        for selection, requested, cached in saved:
            selection._requested = requested
            selection._selections.clear()
            selection._selections.update(cached)

    return undo


def _scale_threshold(module: FrameworkNeuron, factor: float):
    """``v_threshold`` is a float the kernels read at every call (a tensor in place, should a user make it
    one). Returns the undo."""
    previous = module.v_threshold
    if isinstance(previous, torch.Tensor):
        return scale_tensor_in_place(previous, factor)
    module.v_threshold = float(previous) * factor

    def undo():
        module.v_threshold = previous

    return undo


def _surrogate_lever(module: FrameworkNeuron) -> Optional[SurrogateLever]:
    """A ``surrogate_function`` of SpikingJelly's surrogate module (both versions keep each parameter as an
    attribute, read at call time, also by the fused kernels): the family is a deep copy with the shape attribute
    set, so the default instance that every neuron of a class shares is never changed. Other modules: None."""
    current = module.surrogate_function
    if not (isinstance(current, nn.Module) and type(current).__module__ == sj_surrogate.__name__):
        return None
    _, params = describe_surrogate(current)
    parameter = shape_parameter(params)
    if parameter is None:
        return None

    def at(value: float) -> nn.Module:
        fresh = copy.deepcopy(current)
        setattr(fresh, parameter, float(value))
        return fresh

    def install(fn) -> None:
        module.surrogate_function = fn

    return SurrogateLever(parameter, float(params[parameter]), current, at, install)


_RUNS: dict[str, Any] = dict(reset=_to_rest, time_major=_time_major, surrogate_path=_surrogate_path,
                             scale_threshold=_scale_threshold, surrogate_lever=_surrogate_lever)


def _register() -> None:
    for name, reader in _READERS.items():
        cls = getattr(sj_neuron, name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            register_neuron(cls, _checked(cls, reader), framework=FRAMEWORK, **_RUNS)
    # Every other neuron is "not supported yet" rather than silently no neuron at all. SimpleBaseNode (2.x
    # only) is the base users subclass to write their own charge equation.
    register_unsupported(sj_neuron.BaseNode, FRAMEWORK)
    simple_base = getattr(sj_neuron, "SimpleBaseNode", None)
    if isinstance(simple_base, type):
        register_unsupported(simple_base, FRAMEWORK)


_register()
