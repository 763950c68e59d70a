"""The recorded forward pass of ``plan``: each weight layer's input statistics and input node, each neuron's
input node, and the walk back through the autograd graph from a neuron's input to the weights and the other
neurons' spikes that produced it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from .adapters import internal_weights
from .errors import PlanError
from .state import all_tensors, first_tensor, run_model

__all__ = ["WEIGHT_LAYERS", "NORM_LAYERS", "WeightLayer", "InputStats", "StatsAccumulator", "ForwardRecord",
           "trace_sources", "input_source", "note_other_uses", "LATER_CALLS"]

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
WeightLayer = Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                    nn.ConvTranspose3d]  # a module of WEIGHT_LAYERS, for annotations
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass
class InputStats:
    """Statistics of a weight layer's input over the example batch and all time steps."""

    mean: float
    second_moment: float
    nonzero_fraction: float  # the spike probability per step when the input is binary
    binary: bool
    count: int

    @property
    def spike_probability(self) -> Optional[float]:
        return self.nonzero_fraction if self.binary else None


class StatsAccumulator:
    def __init__(self):
        self.total = self.squares = self.nonzero = 0.0
        self.count = 0
        self.binary = True

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        # half precision in float32: ``x * x`` in float16/bfloat16 would round before the float64 sum, so a half
        # model would get other statistics (and weights) than float32 on the same values; in float32 the square
        # of a half value is exact
        if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        self.total += float(x.sum(dtype=torch.float64))
        self.squares += float((x * x).sum(dtype=torch.float64))
        nonzero = int(torch.count_nonzero(x))
        self.nonzero += nonzero
        self.count += x.numel()
        if self.binary:  # spikes: every non-zero entry is 1
            self.binary = int(torch.count_nonzero(x == 1)) == nonzero

    def result(self) -> Optional[InputStats]:
        if self.count == 0:
            return None
        n = self.count
        return InputStats(self.total / n, self.squares / n, self.nonzero / n, self.binary, n)


def trace_sources(node, boundaries: dict[int, str], weights: dict[int, str], norms: dict[int, str],
                   passes: dict[int, str]):
    """Follow the autograd graph back from a neuron's input to weight layers and other neurons' spikes.

    Returns ``({layer: (norms on its path, modules passed through)}, [neurons whose spikes arrive directly])``.
    """
    layers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    spikes: list[str] = []
    stack: list[tuple[Any, tuple[str, ...], tuple[str, ...]]] = [(node, (), ())]
    # Holds every node it has seen: a graph node's Python object may live only while referenced (torch <= 2.11),
    # and a freed object's id is reused, which would make an unseen node look visited.
    visited: dict[int, Any] = {}
    while stack:
        current, path_norms, path_passes = stack.pop()
        if current is None or id(current) in visited:
            continue
        visited[id(current)] = current
        if id(current) in boundaries:
            if boundaries[id(current)] not in spikes:
                spikes.append(boundaries[id(current)])
            continue
        if id(current) in passes:
            path_passes = path_passes + (passes[id(current)],)
        children = [fn for fn, _ in getattr(current, "next_functions", ()) if fn is not None]
        variables = [_leaf_variable(child) for child in children]
        for variable in variables:  # a norm's parameters first: it lies between the layer and the neuron
            if variable is not None and id(variable) in norms and norms[id(variable)] not in path_norms:
                path_norms = path_norms + (norms[id(variable)],)
        hit_weight = False
        for variable in variables:
            if variable is not None and id(variable) in weights:
                layers.setdefault(weights[id(variable)], (path_norms, path_passes[::-1]))
                hit_weight = True
        if not hit_weight:
            stack.extend((child, path_norms, path_passes) for child, variable in zip(children, variables)
                         if variable is None)
    return layers, spikes


def _leaf_variable(node, hops: int = 4):
    """The parameter behind a graph node: an AccumulateGrad leaf, possibly reached through single-input
    view-like nodes (``weight.t()`` inside ``F.linear``, a dtype cast, an expand)."""
    for _ in range(hops):
        variable = getattr(node, "variable", None)
        if variable is not None:
            return variable
        inputs = [fn for fn, _ in getattr(node, "next_functions", ()) if fn is not None]
        if len(inputs) != 1 or not type(node).__name__.startswith(_VIEW_NODES):
            return None
        node = inputs[0]
    return getattr(node, "variable", None)


_VIEW_NODES = ("TBackward", "ViewBackward", "ReshapeAlias", "UnsafeViewBackward", "ExpandBackward", "ToCopyBackward",
               "PermuteBackward", "TransposeBackward", "UnsqueezeBackward", "SqueezeBackward", "CloneBackward",
               "AliasBackward")


def input_source(node, boundaries, weights, norms, passes) -> dict[str, Any]:
    """Where a tensor came from: other neurons' spikes, weight layers, or the data."""
    if node is None:
        return {"input_source": "data", "upstream": ()}
    layers, spikes = trace_sources(node, boundaries, weights, norms, passes)
    if spikes:
        return {"input_source": "neurons", "upstream": tuple(spikes)}
    return {"input_source": "layers" if layers else "data", "upstream": ()}


class ForwardRecord:
    """What one forward pass of the example input leaves behind, recorded by hooks: each weight layer's input
    statistics and input node, each neuron's input node, the graph nodes of neurons' outputs (boundaries) and of
    the pass-through modules. The graph nodes are kept alive while their ``id()`` is used as a key."""

    def __init__(self, model: nn.Module, neurons: list[tuple[str, nn.Module]], modules: dict[str, WeightLayer]):
        self.model, self.neurons, self.modules = model, neurons, modules
        self.neuron_names = [n for n, _ in neurons]
        # statistics of a neuron's own input and output are needed only for the weights inside it
        self.with_internal = {name for name, module in neurons if internal_weights(module)}
        self.accumulators: dict[Any, StatsAccumulator] = {}
        self.layer_inputs: dict[str, Any] = {}  # weight layer -> grad_fn of its first input
        self.input_nodes: dict[str, Any] = {}  # neuron -> grad_fn of its first call's input (None: not connected)
        self.later_inputs: dict[str, list[Any]] = {}  # neuron -> grad_fns of its next calls' inputs (a few)
        self.boundaries: dict[int, str] = {}
        self.passes: dict[int, str] = {}
        self.keep_alive: list[Any] = []
        self.handles: list[Any] = []

    # --- the hooks -------------------------------------------------------------------------------------
    def _keep(self, node) -> None:
        self.keep_alive.append(node)  # keeps the node (and its id) alive even if its tensor changes in place

    def _layer_pre_hook(self, key: str):
        def hook(module, args):
            tensor = first_tensor(args)
            if tensor is not None:
                self.accumulators.setdefault(key, StatsAccumulator()).add(tensor)
                if key not in self.layer_inputs:
                    self.layer_inputs[key] = tensor.grad_fn
                    self._keep(tensor.grad_fn)
        return hook

    def _neuron_pre_hook(self, name: str):
        def hook(module, args):
            tensor = first_tensor(args)
            if tensor is not None and name in self.with_internal:
                self.accumulators.setdefault((name, "input"), StatsAccumulator()).add(tensor)
            node = getattr(tensor, "grad_fn", None)
            if name not in self.input_nodes:
                self.input_nodes[name] = node
            elif node is not None and len(self.later_inputs.setdefault(name, [])) < LATER_CALLS:
                self.later_inputs[name].append(node)  # a second place, or the same place at a later step
                self._keep(node)
        return hook

    def _neuron_hook(self, name: str):
        def hook(module, args, output):
            tensors = all_tensors(output)
            if tensors and name in self.with_internal:
                self.accumulators.setdefault((name, "recurrent"), StatsAccumulator()).add(tensors[0])
            for t in tensors:
                if t.grad_fn is not None:
                    self.boundaries.setdefault(id(t.grad_fn), name)
                    self._keep(t.grad_fn)
        return hook

    def _pass_hook(self, module: nn.Module):
        def hook(mod, args, output):
            tensor = first_tensor(output)
            if tensor is not None and tensor.grad_fn is not None and id(tensor.grad_fn) not in self.passes:
                self.passes[id(tensor.grad_fn)] = type(module).__name__
                self._keep(tensor.grad_fn)
        return hook

    def _inside_a_neuron(self, name: str) -> bool:
        return name in self.neuron_names or any(name.startswith(n + ".") for n in self.neuron_names if n)

    def install(self) -> None:
        for name, layer in self.modules.items():
            self.handles.append(layer.register_forward_pre_hook(self._layer_pre_hook(name)))
        for name, module in self.neurons:
            self.handles.append(module.register_forward_pre_hook(self._neuron_pre_hook(name)))
            self.handles.append(module.register_forward_hook(self._neuron_hook(name)))
        for name, module in self.model.named_modules():
            if not list(module.children()) and not isinstance(module, WEIGHT_LAYERS + NORM_LAYERS) \
                    and not self._inside_a_neuron(name):
                self.handles.append(module.register_forward_hook(self._pass_hook(module)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.keep_alive.clear()
        self.input_nodes.clear()

    # --- the pass ----------------------------------------------------------------------------------------
    def run(self, example_input: Any, forward) -> None:
        with torch.enable_grad():
            try:
                run_model(self.model, example_input, forward)
            except PlanError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PlanError(f"plan: the model does not run on the example input: {type(exc).__name__}: "
                                f"{exc}") from exc


LATER_CALLS = 16  # later calls of a neuron traced for other places it is used (time steps repeat the first)


def note_other_uses(name: str, first: dict, later: Sequence[Any], graph, notes: list[str]) -> None:
    """A neuron module called at a second place (fed by other layers than at its first call) is planned for
    its first use only: say so (the calls of a time loop are fed by the same layers and say nothing)."""
    others: list[str] = []
    for node in later:
        found, _ = trace_sources(node, *graph)
        others += [layer for layer in found if layer not in first and layer not in others]
    if others:
        notes.append(f"neuron {name} is used at more than one place; it is planned for its first use only "
                     f"(fed by {', '.join(first) or 'no weight layer'}), not for its use after "
                     f"{', '.join(others)}: give each place its own neuron module")
