"""Neuron adapters: the registry that turns a framework's neuron module into a :class:`NeuronSpec`.

This package is the only place that imports snnTorch or SpikingJelly, and it imports a framework's adapter
only when that framework is already imported by the user's code (a model built from snnTorch neurons has
imported snnTorch), so planning a SpikingJelly model never imports snnTorch and vice versa.

Users register their own neuron classes::

    import snn_initplug as sip
    sip.register_neuron(MyLIF, to_spec=lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.decay,
                                                               surrogate=m.spike_fn))

Third-party packages ship adapters without changes here through the entry-point group
``snn_initplug.adapters``: each entry point names a callable that is called once, with no arguments, the
first time a neuron is looked up, and registers its classes with :func:`register_neuron`::

    [project.entry-points."snn_initplug.adapters"]
    norse = "my_package.snn_initplug_adapter:register"
"""
from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..errors import ArgumentTypeError, UnsupportedNeuronError
from ..neuron import NeuronSpec

__all__ = [
    "NeuronAdapter",
    "InternalWeight",
    "UnsupportedNeuronError",
    "register_neuron",
    "register_unsupported",
    "unregister_neuron",
    "find_adapter",
    "is_neuron",
    "neuron_spec",
    "ENTRY_POINT_GROUP",
    "reset_neuron",
    "is_time_major",
    "fires_on_last_call",
    "scale_tensor_in_place",
    "threshold_lever",
    "use_surrogate_path",
    "SurrogateLever",
    "surrogate_lever",
    "register_state_attributes",
    "state_attributes",
]

ENTRY_POINT_GROUP = "snn_initplug.adapters"

# A framework's neuron module as an adapter reads it: its attributes (threshold, beta, spike_grad, reset_mem,
# ...) are the framework's, which ships no annotations, so they are not checked against nn.Module's.
FrameworkNeuron = Any




@dataclass(frozen=True)
class InternalWeight:
    """A weight tensor that lives inside a neuron module (snnTorch ``RLeaky.recurrent``, ``LeakyParallel.rnn``).

    ``role`` is ``"input"`` (it feeds the neuron from the previous layer) or ``"recurrent"``.
    ``name`` is the parameter's name relative to the neuron module, e.g. ``"recurrent.weight"``.
    """

    name: str
    role: str
    fan_in: int


@dataclass(frozen=True)
class SurrogateLever:
    """A neuron's surrogate as a family of one shape ``parameter`` (now at ``value``): ``at(v)`` builds a new
    spike function of the same family at shape ``v`` (never the object the neuron holds, which other neurons
    may share), ``install(fn)`` puts a spike function on the neuron, and ``current`` is the object it holds."""

    parameter: str
    value: float
    current: Callable
    at: Callable[[float], Callable]
    install: Callable[[Callable], None]


@dataclass(frozen=True)
class NeuronAdapter:
    """How to read one neuron class, and the facts about how it runs that the core needs.

    ``to_spec(module) -> NeuronSpec`` reads the live values; ``internal_weights(module)`` lists weights
    inside the neuron (default: none); ``framework`` is a label for reports. How the neuron runs:

    * ``reset(module)`` puts it at rest (default: nothing to reset);
    * ``time_major(module)``: True when one call takes a whole sequence ``[T, B, ...]`` (default: one step);
    * ``fires_on_last_call``: the neuron calls its spike function more than once per step and only the last
      call fires (snnTorch first calls it on the previous membrane for the reset signal);
    * ``surrogate_path(module) -> undo``: switch the neuron to the code path that calls its spike function
      (some implementations run fused kernels without it), returning the function that switches back;
    * ``scale_threshold(module, factor) -> undo``: multiply the neuron's threshold(s) by ``factor`` in place,
      returning the function that puts the exact previous value back (the lever of
      ``calibrate(weightless="threshold")``; default: none);
    * ``surrogate_lever(module) -> SurrogateLever | None``: the neuron's surrogate as a one-parameter family
      that can be rebuilt and installed (``spikeinit``'s surrogate shaping); None (or no function, the
      default) when its shape cannot be set, e.g. a user callable.
    """

    cls: type
    to_spec: Callable[[nn.Module], NeuronSpec]
    internal_weights: Optional[Callable[[nn.Module], Sequence[InternalWeight]]] = None
    framework: str = "user"
    reset: Optional[Callable[[nn.Module], None]] = None
    time_major: Optional[Callable[[nn.Module], bool]] = None
    fires_on_last_call: bool = False
    surrogate_path: Optional[Callable[[nn.Module], Callable[[], None]]] = None
    scale_threshold: Optional[Callable[[nn.Module, float], Callable[[], None]]] = None
    surrogate_lever: Optional[Callable[[nn.Module], Optional[SurrogateLever]]] = None


_registry: dict[type, NeuronAdapter] = {}
_unsupported: dict[type, str] = {}  # base class -> framework: its unregistered subclasses are "not supported yet"
_state_attributes: dict[type, tuple[str, ...]] = {}  # base class -> attributes holding its state
_lock = threading.RLock()
_loaded_frameworks: set = set()
_entry_points_loaded = False

# framework module name -> our adapter module, imported only once the framework itself is imported
_FRAMEWORK_ADAPTERS = {"snntorch": ".snntorch", "spikingjelly": ".spikingjelly"}


def register_neuron(
    cls: type,
    to_spec: Callable[[nn.Module], NeuronSpec],
    internal_weights: Optional[Callable[[nn.Module], Sequence[InternalWeight]]] = None,
    framework: str = "user",
    *,
    reset: Optional[Callable[[nn.Module], None]] = None,
    time_major: Optional[Callable[[nn.Module], bool]] = None,
    fires_on_last_call: bool = False,
    surrogate_path: Optional[Callable[[nn.Module], Callable[[], None]]] = None,
    scale_threshold: Optional[Callable[[nn.Module, float], Callable[[], None]]] = None,
    surrogate_lever: Optional[Callable[[nn.Module], Optional[SurrogateLever]]] = None,
) -> None:
    """Register (or replace) the adapter of a neuron class; subclasses use it too unless they have their own.

    Args:
        cls: the neuron class (an ``nn.Module`` subclass).
        to_spec: reads a live module into a :class:`~snn_initplug.NeuronSpec` (its threshold, leak, reset and
            spike function).
        internal_weights: lists the weights that live inside the neuron (a recurrent matrix), as
            :class:`~snn_initplug.adapters.InternalWeight` records; default none.
        framework: a label for reports.
        reset: puts the neuron at rest (default: nothing to reset).
        time_major: True when one call takes a whole ``[T, B, ...]`` sequence (default: one step per call).
        fires_on_last_call: the neuron calls its spike function more than once per step and only the last
            call fires.
        surrogate_path: switches the neuron to the code path that calls its spike function in Python and
            returns the function that switches it back.
        scale_threshold: ``(module, factor) -> undo`` multiplies the threshold by ``factor`` in place and returns
            the function restoring the exact previous value; lets ``calibrate(weightless="threshold")`` bring a
            neuron that no weight feeds to its target rate.
        surrogate_lever: ``module -> SurrogateLever | None``: the neuron's surrogate as a one-parameter family
            that ``initialize(..., "spikeinit")`` may reshape (default: none, the surrogate is left as is).

    Example:
        >>> import torch, torch.nn as nn
        >>> import snn_initplug as sip
        >>> class MyLIF(nn.Module):  # u = 0.8 u + x, spikes above θ = 1
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.decay, self.theta = 0.8, 1.0
        >>> sip.register_neuron(MyLIF, to_spec=lambda m: sip.NeuronSpec(
        ...     threshold=m.theta, beta=m.decay, surrogate=lambda x: torch.sigmoid(4 * x)))
        >>> sip.adapters.neuron_spec(MyLIF()).beta
        0.8
        >>> sip.unregister_neuron(MyLIF)
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ArgumentTypeError(f"register_neuron: cls must be an nn.Module subclass, got {cls!r}")
    if not callable(to_spec):
        raise ArgumentTypeError(f"register_neuron: to_spec must be callable, got {type(to_spec).__name__}")
    if internal_weights is not None and not callable(internal_weights):
        raise ArgumentTypeError("register_neuron: internal_weights must be callable or None")
    if scale_threshold is not None and not callable(scale_threshold):
        raise ArgumentTypeError("register_neuron: scale_threshold must be callable or None")
    if surrogate_lever is not None and not callable(surrogate_lever):
        raise ArgumentTypeError("register_neuron: surrogate_lever must be callable or None")
    with _lock:
        _registry[cls] = NeuronAdapter(cls, to_spec, internal_weights, framework, reset, time_major,
                                       bool(fires_on_last_call), surrogate_path, scale_threshold, surrogate_lever)


def unregister_neuron(cls: type) -> None:
    """Remove the adapter registered for ``cls`` (nothing happens when there is none).

    Args:
        cls: the neuron class given to :func:`register_neuron`.
    """
    with _lock:
        _registry.pop(cls, None)


def register_unsupported(base: type, framework: str) -> None:
    """Declare ``base`` unsupported: it and its subclasses without a more specific adapter are reported as
    "not supported yet" rather than silently ignored (used for the frameworks' neuron base classes)."""
    with _lock:
        _unsupported[base] = framework


def register_state_attributes(base: type, names: Sequence[str]) -> None:
    """Declare attributes of ``base`` and its subclasses that hold state a forward pass changes and that are
    neither buffers nor tensor attributes (SpikingJelly's ``_memories`` dict): every walk over a model saves
    and restores them with the rest of its state (:class:`snn_initplug.planning.StateSnapshot`)."""
    with _lock:
        _state_attributes[base] = tuple(names)


def state_attributes(module: nn.Module) -> frozenset[str]:
    """The attributes of ``module`` declared by :func:`register_state_attributes` for its classes."""
    _ensure_loaded()
    with _lock:
        return frozenset(name for klass in type(module).__mro__ for name in _state_attributes.get(klass, ()))


def _load_framework_adapters() -> None:
    for framework, module in _FRAMEWORK_ADAPTERS.items():
        if framework in sys.modules and framework not in _loaded_frameworks:
            _loaded_frameworks.add(framework)
            importlib.import_module(module, __name__)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    if sys.version_info >= (3, 10):
        found = entry_points(group=ENTRY_POINT_GROUP)
    else:  # Python 3.9: entry_points() takes no group and returns a dict
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    for entry in found:
        try:
            entry.load()()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break planning
            warnings.warn(f"snn_initplug: adapter entry point {entry.name!r} failed to load: {exc}", stacklevel=2)


def _ensure_loaded() -> None:
    with _lock:
        _load_framework_adapters()
        _load_entry_points()


def find_adapter(module: nn.Module) -> Optional[NeuronAdapter]:
    """The adapter for ``module`` (most specific registered class in its MRO), None if it is not a neuron.

    Raises :class:`UnsupportedNeuronError` for a framework neuron with no adapter.
    """
    _ensure_loaded()
    with _lock:
        # The most specific class decides: a registered adapter, or a class declared unsupported (so that an
        # unsupported subclass of a supported neuron is not read with its parent's adapter).
        for klass in type(module).__mro__:
            adapter = _registry.get(klass)
            if adapter is not None:
                return adapter
            if klass in _unsupported:
                raise UnsupportedNeuronError(
                    f"not supported yet: {type(module).__module__}.{type(module).__qualname__} "
                    f"({_unsupported[klass]} neuron); register it with snn_initplug.register_neuron(cls, to_spec)"
                )
    return None


def is_neuron(module: nn.Module) -> bool:
    """True for a module with an adapter (unsupported framework neurons raise, see :func:`find_adapter`)."""
    return find_adapter(module) is not None


def neuron_spec(module: nn.Module) -> NeuronSpec:
    """The :class:`~snn_initplug.NeuronSpec` of a neuron module, read by its adapter from the live module.

    Args:
        module: a neuron of snnTorch, SpikingJelly, or a class registered with :func:`register_neuron`.

    Returns:
        NeuronSpec: threshold, leak, input scaling, reset and spike function, as the neuron uses them.

    Raises:
        ArgumentTypeError: ``module`` is not a registered neuron.
        UnsupportedNeuronError: a framework neuron whose update is not of the LIF form.

    Example:
        >>> import snntorch as snn
        >>> import snn_initplug as sip
        >>> spec = sip.adapters.neuron_spec(snn.Leaky(beta=0.9, threshold=1.5))
        >>> spec.threshold, spec.reset, spec.surrogate_description
        (1.5, 'subtract', ('atan', {'alpha': 2.0}))
    """
    adapter = find_adapter(module)
    if adapter is None:
        raise ArgumentTypeError(f"{type(module).__qualname__} is not a registered spiking neuron")
    return adapter.to_spec(module)


def internal_weights(module: nn.Module) -> tuple[InternalWeight, ...]:
    adapter = find_adapter(module)
    if adapter is None or adapter.internal_weights is None:
        return ()
    return tuple(adapter.internal_weights(module))


# --------------------------------------------------------------------------------------------------------
# How a neuron runs, asked of its adapter (modules without an adapter: the defaults)
# --------------------------------------------------------------------------------------------------------
def reset_neuron(module: nn.Module) -> None:
    """Put a neuron at rest (its adapter's ``reset``); other modules are left alone."""
    adapter = find_adapter(module)
    if adapter is not None and adapter.reset is not None:
        adapter.reset(module)


def is_time_major(module: nn.Module) -> bool:
    """True when one call of the neuron takes a whole sequence ``[T, B, ...]``."""
    adapter = find_adapter(module)
    return adapter is not None and adapter.time_major is not None and bool(adapter.time_major(module))


def fires_on_last_call(module: nn.Module) -> bool:
    """True when only the last spike-function call of each forward call fires."""
    adapter = find_adapter(module)
    return adapter is not None and adapter.fires_on_last_call


def scale_tensor_in_place(tensor: torch.Tensor, factor: float) -> Callable[[], None]:
    """``tensor *= factor`` in place (a buffer stays the module's buffer, a Parameter the optimizer's), returning
    the function that puts the exact previous values back: the threshold lever of the adapters."""
    previous = tensor.detach().clone()
    with torch.no_grad():
        tensor.mul_(factor)

    def undo() -> None:
        with torch.no_grad():
            tensor.copy_(previous)

    return undo


def threshold_lever(module: nn.Module) -> Optional[Callable[[float], Callable[[], None]]]:
    """``factor -> undo`` scaling the neuron's threshold in place, or None when its adapter has no such lever."""
    adapter = find_adapter(module)
    if adapter is None or adapter.scale_threshold is None:
        return None
    scale = adapter.scale_threshold
    return lambda factor: scale(module, factor)


def surrogate_lever(module: nn.Module) -> Optional[SurrogateLever]:
    """The neuron's surrogate as a reshapeable one-parameter family (its adapter's ``surrogate_lever``), or None
    when its shape cannot be set."""
    adapter = find_adapter(module)
    if adapter is None or adapter.surrogate_lever is None:
        return None
    return adapter.surrogate_lever(module)


def use_surrogate_path(module: nn.Module) -> Callable[[], None]:
    """Switch the neuron to the code path that calls its spike function; returns the undo function."""
    adapter = find_adapter(module)
    if adapter is None or adapter.surrogate_path is None:
        return lambda: None
    return adapter.surrogate_path(module)
