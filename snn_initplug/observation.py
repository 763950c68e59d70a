"""What ``diagnose`` observes during its pass: per neuron, the spikes counted by a forward hook and the
membrane, from a recorder that replaces the neuron's spike function for the pass (see
:mod:`snn_initplug.diagnostics` for how and why)."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from .adapters import fires_on_last_call, is_time_major, use_surrogate_path
from .errors import DiagnoseError, SurrogateError
from .planning import Plan, first_tensor, reset_neuron
from .surrogate import surrogate_derivative

__all__ = ["SUPPORT_FRACTION", "Observation", "SpikeCounter", "MembraneStats", "unobserved_notes"]

# |h| above this fraction of its peak counts as "inside the surrogate's support".
SUPPORT_FRACTION = 0.01

# Where the peak of h is searched: dense near 0, where every built-in surrogate has its features.
_PEAK_GRID = torch.cat([torch.linspace(-20.0, 20.0, 8001, dtype=torch.float64),
                        torch.logspace(-6, 1.3, 400, dtype=torch.float64),
                        -torch.logspace(-6, 1.3, 400, dtype=torch.float64)])


# --------------------------------------------------------------------------------------------------------
# Accumulators
# --------------------------------------------------------------------------------------------------------
class SpikeCounter:
    """Per-neuron spike counts :math:`\\sum_n s_j[n]` over samples and steps."""

    def __init__(self, leading_dims: int):
        self.leading_dims = leading_dims
        self.counts: Optional[torch.Tensor] = None
        self.observations = 0

    def add(self, spikes: torch.Tensor) -> None:
        lead = min(self.leading_dims, spikes.dim() - 1)  # a 1-d output is one observation of each neuron
        per_neuron = spikes.detach().reshape(math.prod(spikes.shape[:lead]) if lead > 0 else 1, -1)
        fired = (per_neuron != 0).sum(0, dtype=torch.float64).cpu()
        if self.counts is not None and self.counts.shape != fired.shape:
            raise DiagnoseError(f"a neuron layer changed size between calls ({tuple(self.counts.shape)} -> "
                                f"{tuple(fired.shape)} neurons)")
        self.counts = fired if self.counts is None else self.counts + fired
        self.observations += per_neuron.shape[0]

    def rates(self) -> torch.Tensor:
        """Spikes per observation of each neuron; empty when the layer was called but returned no tensor."""
        if self.counts is None:
            return torch.zeros(0, dtype=torch.float64)
        return self.counts / self.observations


class MembraneStats:
    """Moments of z = u/θ and the count of values inside the surrogate's support."""

    def __init__(self, spike_fn: Callable, threshold: Any):
        self.spike_fn = spike_fn
        self.threshold = threshold
        self.total = self.squares = 0.0
        self.count = 0
        self.in_support = 0
        self.non_finite = 0  # NaN or ±inf membranes (a diverged model): counted, left out of the moments
        self.peak: Optional[float] = None
        self.support_error: Optional[str] = None
        try:
            self.peak = float(surrogate_derivative(spike_fn, _PEAK_GRID).abs().max())
        except SurrogateError as exc:  # e.g. snnTorch surrogate_disable=True: no gradient at all
            self.support_error = str(exc)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            self.non_finite += int((~finite).sum())
            x = x[finite]
        theta = torch.as_tensor(self.threshold, dtype=torch.float64, device=x.device)
        try:
            z = x / theta + 1.0  # u/θ = (x + θ)/θ
        except RuntimeError:  # per-neuron θ that does not broadcast: fall back to its mean
            z = x / theta.mean() + 1.0
        self.total += float(z.sum())
        self.squares += float((z * z).sum())
        self.count += z.numel()
        if self.peak is not None and self.peak > 0:
            h = surrogate_derivative(self.spike_fn, x)
            self.in_support += int((h.abs() > SUPPORT_FRACTION * self.peak).sum())

    def result(self) -> tuple[Optional[float], Optional[float], Optional[float]]:
        if self.count == 0:
            return None, None, None
        mean = self.total / self.count
        std = math.sqrt(max(self.squares / self.count - mean * mean, 0.0))
        support = None if self.peak is None else (self.in_support / self.count if self.peak > 0 else 0.0)
        return mean, std, support


# --------------------------------------------------------------------------------------------------------
# Recording the spike function's argument
# --------------------------------------------------------------------------------------------------------
class _Recorder:
    """Calls the original spike function and keeps its argument x = u - θ."""

    def __init__(self, original: Callable):
        self.original = original
        self.pending: list[torch.Tensor] = []

    def __call__(self, x, *args, **kwargs):
        self.pending.append(x.detach())
        return self.original(x, *args, **kwargs)


class _ModuleRecorder(nn.Module):
    """The recorder for spike functions stored as child modules (SpikingJelly). Being defined outside
    SpikingJelly's surrogate module, it makes SpikingJelly 2.x take its torch reference path."""

    recorder: _Recorder

    def __init__(self, original: Callable):
        super().__init__()
        # not a registered child: the model's module list, devices and state_dict stay as they were
        object.__setattr__(self, "recorder", _Recorder(original))

    @property
    def pending(self) -> list[torch.Tensor]:
        return self.recorder.pending

    def forward(self, x, *args, **kwargs):
        return self.recorder(x, *args, **kwargs)


def _install_recorder(module: nn.Module, spike_fn: Callable
                      ) -> tuple[Optional[Union[_Recorder, _ModuleRecorder]], Callable[[], None]]:
    """Replace every attribute of ``module`` that holds ``spike_fn`` by one recorder. Returns the recorder
    and an undo function, or (None, no-op) when the neuron does not keep its spike function as an attribute."""
    children = [name for name, child in module._modules.items() if child is spike_fn]
    plain = [name for name, value in vars(module).items() if value is spike_fn]
    if not children and not plain:
        return None, lambda: None
    as_child = _ModuleRecorder(spike_fn) if children else None  # a child slot must hold a module
    recorder = as_child.recorder if as_child is not None else _Recorder(spike_fn)
    children_before = {name: module._modules[name] for name in children}  # spike_fn, as the module it is
    for name in children:
        module._modules[name] = as_child
    for name in plain:
        module.__dict__[name] = recorder

    def undo():
        module._modules.update(children_before)
        for name in plain:
            module.__dict__[name] = spike_fn

    return (as_child if as_child is not None else recorder), undo


def _leading_dims(module: nn.Module) -> int:
    """How many leading dimensions of a neuron's output are samples (and time): [B, ...] per step, or [T, B, ...]
    for a whole sequence in one call."""
    return 2 if is_time_major(module) else 1


class Observation:
    """Per-neuron spike counters and membrane statistics, filled by hooks during one pass, in call order."""

    def __init__(self):
        self.order: list[str] = []
        self.counters: dict[str, SpikeCounter] = {}
        self.membranes: dict[str, MembraneStats] = {}
        self.recorders: dict[str, Any] = {}
        self.notes: list[str] = []

    def _pre_hook(self, name: str):
        def hook(module, args):
            if name not in self.counters:
                self.order.append(name)
                self.counters[name] = SpikeCounter(_leading_dims(module))
            if name in self.recorders:
                self.recorders[name].pending.clear()
        return hook

    def _post_hook(self, name: str, last_only: bool):
        def hook(module, args, output):
            spikes = first_tensor(output)
            if spikes is not None:
                self.counters[name].add(spikes)
            if name in self.recorders:
                calls = self.recorders[name].pending
                for x in (calls[-1:] if last_only else calls):
                    self.membranes[name].add(x)
                calls.clear()
        return hook

    def install(self, p: Plan, undo: contextlib.ExitStack, reset_state: bool) -> None:
        """Recorders on the spike functions, the neurons on their surrogate path, the hooks; ``undo`` reverts."""
        for name, module, spec in p.neurons:
            if reset_state:
                reset_neuron(module)
            recorder = None
            if spec.surrogate is not None:
                recorder, remove = _install_recorder(module, spec.surrogate)
                undo.callback(remove)
                if recorder is not None:
                    self.recorders[name] = recorder
                    self.membranes[name] = MembraneStats(spec.surrogate, spec.threshold)
            if recorder is None:
                self.notes.append(f"{name}: the membrane is not observable (its spike function is not an attribute "
                                  "of the module)")
            undo.callback(use_surrogate_path(module))
            undo.callback(module.register_forward_pre_hook(self._pre_hook(name)).remove)
            undo.callback(module.register_forward_hook(self._post_hook(name, fires_on_last_call(module))).remove)


def unobserved_notes(p: Plan, observed: Observation) -> list[str]:
    notes = []
    for name, _, _ in p.neurons:
        if name not in observed.counters:
            notes.append(f"{name} was not called by the forward pass")
        elif name in observed.membranes and observed.membranes[name].non_finite:
            stats = observed.membranes[name]
            notes.append(f"{name}: {stats.non_finite} of {stats.non_finite + stats.count} membrane values are not "
                         "finite (NaN or ±inf): the model has diverged; the membrane statistics use the finite ones")
        elif name in observed.membranes and observed.membranes[name].count == 0:
            notes.append(f"{name}: the membrane is not observable (the neuron did not call the spike function "
                         "it keeps as an attribute)")
    return notes
