"""Leaving a model as it was: the state of its modules (:class:`StateSnapshot`), and :func:`preserved`, which
puts back states, ``requires_grad`` flags and the RNG after a walk; how every entry point runs the model on an
example input, and the tensors in what it returns."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .adapters import state_attributes
from .transaction import process_rng_kept

__all__ = ["StateSnapshot", "preserved", "first_tensor", "run_model", "all_tensors"]

_SKIP_ATTRS = {"_parameters", "_modules", "_buffers", "training"}


def _clone(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class StateSnapshot:
    """The state of every module under ``root``: buffers (BatchNorm statistics, hidden states), tensor
    attributes and the attributes its adapter declares (:func:`~snn_initplug.adapters.state_attributes`);
    parameters are not included. ``restore()`` puts back the
    same buffer objects with their old values and removes attributes created since, so it can be called
    repeatedly (for example before each re-run of a neuron during calibration)."""

    def __init__(self, root: nn.Module):
        self._saved = []
        for module in root.modules():
            declared = state_attributes(module)
            buffers = {k: (v, _clone(v)) for k, v in module._buffers.items()}
            extras = {k: _clone(v) if not isinstance(v, dict) else {kk: _clone(vv) for kk, vv in v.items()}
                      for k, v in vars(module).items()
                      # ``v is None`` too: a state that starts as None (``self.mem = None`` until the first
                      # call, common in hand-written neurons) must not keep the walk's last tensor
                      if k not in _SKIP_ATTRS and (isinstance(v, torch.Tensor) or v is None or k in declared)}
            self._saved.append((module, buffers, extras, set(vars(module))))

    def restore(self) -> None:
        for module, buffers, extras, keys in self._saved:
            for name in list(vars(module)):
                if name not in keys:  # attributes the forward created
                    delattr(module, name)
            module._buffers.clear()
            for name, (original, value) in buffers.items():
                if isinstance(original, torch.Tensor):
                    with torch.no_grad():
                        if original.shape == value.shape:
                            original.copy_(value)
                        else:
                            original = value.clone()
                module._buffers[name] = original
            for name, value in extras.items():
                copy = {k: _clone(v) for k, v in value.items()} if isinstance(value, dict) else _clone(value)
                object.__setattr__(module, name, copy)


@contextlib.contextmanager
def preserved(model: nn.Module, watch_draws: bool = True):
    """Restore every module's state (:class:`StateSnapshot`), the parameters' ``requires_grad`` flags and the
    process RNG, if this thread drew from it (:func:`~snn_initplug.transaction.process_rng_kept`, watching
    every operation, or with ``watch_draws=False`` trusting the SameDraws inside), on exit; the parameters
    themselves are never written."""
    snapshot = StateSnapshot(model)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with process_rng_kept(watch_draws):
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        snapshot.restore()


def first_tensor(value: Any) -> Optional[torch.Tensor]:
    """The first tensor in a module's output or arguments (depth first through tuples and lists)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            tensor = first_tensor(item)
            if tensor is not None:
                return tensor
    return None


def run_model(model: nn.Module, example_input: Any, forward: Optional[Callable[[nn.Module, Any], Any]] = None) -> Any:
    """Run the model as every entry point does: ``forward(model, example_input)`` when given, else
    ``model(*example_input)`` for a tuple of positional arguments, else ``model(example_input)``."""
    if forward is not None:
        return forward(model, example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def all_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in all_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in all_tensors(item)]
    return []
