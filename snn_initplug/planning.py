"""Model walk: pair every spiking neuron with the weight layer(s) that feed it.

With an example input, one forward pass is recorded and the autograd graph of each neuron's input is followed
backwards until it reaches weight parameters (the feeding Linear/Conv layers), passing through BatchNorm
(recorded), pooling, dropout, flatten and residual additions, and stopping at the outputs of other neurons
(a skip path carrying spikes). This works for ``nn.Sequential`` stacks, SpikingJelly containers in multi-step
mode, custom time loops (the snnTorch tutorial style) and the SpikingJelly model zoo alike.
Each weight layer's input statistics (mean, second moment, fraction of non-zeros) are recorded too.

Without an example input, a model made only of sequential containers is walked in module order (and the plan
says so); any other model needs the example input.

The walk leaves the model exactly as it was: parameters, buffers (BatchNorm running statistics included),
neuron states (snnTorch hidden states, SpikingJelly memories), ``requires_grad`` flags and the RNG state are
restored, and all hooks are removed.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn

from .adapters import find_adapter, internal_weights, reset_neuron
from .errors import ArgumentTypeError, InitError, NeuronSpecError, PlanError
from .guard import entry_point
from .init import calculate_fans
from .neuron import NeuronSpec
from .state import StateSnapshot, first_tensor, preserved, run_model
from .tables import render_table, short_number, surrogate_label
from .tracing import (
    NORM_LAYERS,
    WEIGHT_LAYERS,
    ForwardRecord,
    InputStats,
    WeightLayer,
    input_source,
    note_other_uses,
    trace_sources,
)

__all__ = ["plan", "Plan", "LayerPlan", "InputStats", "PlanError", "WEIGHT_LAYERS", "NORM_LAYERS", "StateSnapshot",
           "preserved", "reset_neuron", "first_tensor", "run_model", "fans", "neuron_modules"]

# Containers whose forward runs the children in registration order (SpikingJelly's containers subclass these).
SEQUENTIAL = (nn.Sequential,)




@dataclass
class LayerPlan:
    """One weight tensor that feeds a neuron."""

    name: str  # qualified parameter name, e.g. "features.0.weight" or "lif1.recurrent.weight"
    module_name: str
    module: nn.Module
    parameter: str  # attribute path of the weight inside ``module``
    kind: str  # Linear, Conv2d, ..., or "internal"
    role: str  # "input" or "recurrent"
    fan_in: int
    fan_out: int
    neuron_name: str
    neuron: nn.Module
    spec: NeuronSpec
    norm: Optional[str] = None  # the BatchNorm (or other norm) module between the layer and the neuron
    between: tuple[str, ...] = ()  # module kinds passed through (MaxPool2d, Dropout, Flatten, ...)
    residual: tuple[str, ...] = ()  # other sources summed into the same neuron (layers or neurons' spikes)
    input_stats: Optional[InputStats] = None
    source: str = "example"  # "example" or "module-order"
    # where this layer's input comes from: "neurons" (spikes), "layers" (a weight layer with no neuron between),
    # "data" (the model input) or "unknown"
    input_source: str = "unknown"
    upstream: tuple[str, ...] = ()  # the neurons whose spikes reach this layer's input

    @property
    def weight(self) -> torch.Tensor:
        return self.module.get_parameter(self.parameter)


@dataclass
class Plan:
    layers: list[LayerPlan]
    neurons: list[tuple[str, nn.Module, NeuronSpec]]
    unfed: list[str] = field(default_factory=list)  # neurons with no weight layer before them (encoders)
    source: str = "example"
    notes: list[str] = field(default_factory=list)
    # of those, the neurons fed only by other neurons' spikes combined without a weight (Spikformer's attention
    # LIF: q·kᵀ·v of spikes): name -> the neurons whose spikes feed it
    weightless: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[LayerPlan]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def unfed_notes(self) -> list[str]:
        """The note every entry point adds when some neurons have no weight layer before them (none if none):
        nothing of theirs is initialized or calibrated, so the report must say so rather than look complete."""
        if not self.unfed:
            return []
        return [f"neurons with no weight layer before them (left as they are): {', '.join(self.unfed)}"]

    def layer(self, name: str) -> LayerPlan:
        for entry in self.layers:
            if name in (entry.name, entry.module_name):
                return entry
        raise KeyError(name)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.layers:
            stats = e.input_stats
            rows.append({
                "layer": e.name, "kind": e.kind, "role": e.role, "fan_in": e.fan_in, "fan_out": e.fan_out,
                "norm": e.norm or "", "neuron": f"{e.neuron_name} ({type(e.neuron).__name__})",
                "threshold": short_number(e.spec.threshold), "beta": short_number(e.spec.beta),
                "reset": e.spec.reset if e.spec.reset != "hard" else f"hard({e.spec.reset_value:g})",
                "surrogate": surrogate_label(e.spec.surrogate_description),
                "input_mean": None if stats is None else stats.mean,
                "input_second_moment": None if stats is None else stats.second_moment,
                "spike_probability": None if stats is None else stats.spike_probability,
                "residual": ", ".join(e.residual),
            })
        return rows

    def __str__(self) -> str:
        table = [["layer", "kind", "fan_in", "norm", "neuron", "threshold", "beta", "reset", "surrogate",
                  "E[x]", "E[x^2]", "p(spike)"]]
        for row in self.rows():
            table.append([row["layer"] + (" (rec)" if row["role"] == "recurrent" else ""), row["kind"],
                          str(row["fan_in"]), row["norm"], row["neuron"], row["threshold"], row["beta"],
                          row["reset"], row["surrogate"], short_number(row["input_mean"]),
                          short_number(row["input_second_moment"]), short_number(row["spike_probability"])])
        lines = render_table(table)
        lines.append(f"[{len(self.layers)} weight tensors, {len(self.neurons)} neurons; paired from "
                     f"{'one forward pass of the example input' if self.source == 'example' else 'module order'}]")
        lines += [f"note: {n}" for n in self.notes + self.unfed_notes()]
        return "\n".join(lines)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """PyTorch's fan convention (:func:`snn_initplug.init.calculate_fans`), failing as a planning error."""
    try:
        return calculate_fans(weight)
    except InitError as exc:
        raise PlanError(f"plan: weight {exc}") from exc


# --------------------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------------------
def neuron_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every spiking neuron of ``model`` (a neuron's own submodules are not neurons)."""
    found: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue  # a neuron's own submodules (its surrogate, its recurrent layer) are not separate neurons
        if find_adapter(module) is not None:
            found.append((name, module))
            inside.append(name)
    return found


@entry_point("plan", PlanError)
def plan(model: nn.Module, example_input: Any = None, *, forward=None) -> Plan:
    """Pair every neuron of ``model`` with the weight layer(s) that feed it.

    Args:
        model: an snnTorch or SpikingJelly model (or one with registered custom neurons).
        example_input: a batch as the model's forward takes it (a tensor, or a tuple of positional arguments).
            Without it, only models made of sequential containers can be planned (module order).
        forward: optional ``callable(model, example_input)`` running the model, for models whose forward
            needs more than ``model(*inputs)`` (for example an explicit loop over time steps).

    Returns:
        Plan: one :class:`LayerPlan` per weight (its fans, neuron, :class:`~snn_initplug.NeuronSpec`, norm and
        input statistics); printing it gives a table. The model is left as it was.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 128), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(128, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))
        >>> p = sip.plan(net, torch.rand(8, 784))
        >>> [(layer.name, layer.neuron_name, layer.fan_in) for layer in p.layers]
        [('0.weight', '1', 784), ('2.weight', '3', 128)]
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"plan: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise PlanError("plan: the model is a TorchScript module (torch.jit.trace or torch.jit.script): its "
                        "forward is compiled, so its neurons and the weights feeding them cannot be traced; "
                        "initialize the nn.Module first, then script or trace it")
    if any(p.device.type == "meta" for p in model.parameters()):
        raise PlanError("plan: the model is on the meta device (no data); materialize it first (to_empty + init)")
    parametrized = _parametrized_weights(model)
    if parametrized:  # checked before anything reads a weight: reading one runs the parametrization
        raise PlanError(f"plan: {', '.join(parametrized)} computed by a parametrization (spectral_norm, weight_norm): "
                        "it cannot be initialized in place, and reading it runs the power iteration; initialize the "
                        "model before applying the parametrization, or remove it "
                        "(torch.nn.utils.parametrize.remove_parametrizations, remove_weight_norm, "
                        "remove_spectral_norm) and apply it again afterwards")
    lazy = [name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        raise PlanError(f"plan: {', '.join(lazy)} not materialized yet (a Lazy module); run one forward pass "
                        "of a batch first, so its shape is known")
    frozen_in_inference = [name for name, p in model.named_parameters() if p.is_inference()]
    if frozen_in_inference:
        raise PlanError(f"plan: {', '.join(frozen_in_inference)} made under torch.inference_mode() (an inference "
                        "tensor): it can be neither traced nor written; clone() it into a Parameter outside that "
                        "block first")
    neurons = neuron_modules(model)
    if not neurons:
        raise PlanError(f"plan: no spiking neurons found in {type(model).__name__} "
                        "(supported: snnTorch, SpikingJelly, and classes registered with register_neuron)")
    specs = {name: _read_spec(name, module) for name, module in neurons}
    if example_input is None and forward is None:
        return _plan_by_module_order(model, neurons, specs)
    return _plan_by_example(model, neurons, specs, example_input, forward)


def _parametrized_weights(model: nn.Module) -> list[str]:
    """The weights of ``model`` computed from other tensors: ``torch.nn.utils.parametrize`` (the
    ``parametrizations.*`` API) and the older hooks (``weight_orig`` of spectral_norm, ``weight_g``/``weight_v``
    of weight_norm). Only the module's attributes are read, never the weight itself."""
    found = []
    for name, module in model.named_modules():
        parametrizations = getattr(module, "parametrizations", None)
        params = module._parameters
        hooked = [key[:-5] for key in params if key.endswith("_orig") and key[:-5] not in params] + \
                 [key[:-2] for key in params if key.endswith("_g") and key[:-2] + "_v" in params]
        for key in sorted(set(parametrizations or ()) | set(hooked)):
            found.append(f"{name}.{key}" if name else key)
    return found


def _read_spec(name: str, module: nn.Module) -> NeuronSpec:
    """The neuron's spec from its adapter, with the neuron named in every error: an invalid value the adapter
    read, a user ``to_spec`` that returns something else than a NeuronSpec, or one that raises (its exception
    becomes a PlanError, so plan() raises only the package's errors)."""
    from .adapters import UnsupportedNeuronError

    label = f"{name or 'the model'} ({type(module).__name__})"
    adapter = find_adapter(module)
    if adapter is None:  # found by neuron_modules, so only an unregister_neuron since then gets here
        raise PlanError(f"plan: neuron {label} has no adapter (it was unregistered while planning)")
    try:
        spec = adapter.to_spec(module)
    except NeuronSpecError as exc:
        raise NeuronSpecError(f"plan: neuron {label}: {exc}") from exc
    except UnsupportedNeuronError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's to_spec may raise anything
        raise PlanError(f"plan: reading neuron {label} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(spec, NeuronSpec):
        raise PlanError(f"plan: the adapter of neuron {label} returned {type(spec).__name__}, not a NeuronSpec")
    return spec


def _internal_layers(neuron_name: str, neuron: nn.Module, spec: NeuronSpec, stats, source: str,
                     feed: Optional[dict[str, Any]] = None, notes: Optional[list[str]] = None) -> list[LayerPlan]:
    """Weights inside a neuron: a recurrent weight sees the neuron's own spikes; an input projection sees
    whatever feeds the neuron (``feed``). A one-to-one gain (snnTorch ``RLeaky(all_to_all=False)``'s ``V``, a
    scalar or one value per neuron) is no weight matrix: it has no fans and a random draw would flip its
    sign, so it is left as set, like β, and the plan says so in ``notes``."""
    out = []
    for item in internal_weights(neuron):
        weight = neuron.get_parameter(item.name)
        if weight.dim() < 2:
            if notes is not None:
                label = f"{neuron_name}.{item.name}" if neuron_name else item.name
                notes.append(f"{label} is a one-to-one {item.role} gain of shape {tuple(weight.shape)}, not a weight "
                             "matrix: left as set (calibrated measures its effect)")
            continue
        owner_path, _, attr = item.name.rpartition(".")
        fan_in, fan_out = fans(weight)
        out.append(LayerPlan(
            name=f"{neuron_name}.{item.name}" if neuron_name else item.name, module_name=neuron_name, module=neuron,
            parameter=item.name, kind="internal", role=item.role, fan_in=item.fan_in or fan_in, fan_out=fan_out,
            neuron_name=neuron_name, neuron=neuron, spec=spec, input_stats=stats.get((neuron_name, item.role)),
            source=source,
            **({"input_source": "neurons", "upstream": (neuron_name,)} if item.role == "recurrent" else (feed or {}))))
    return out


def _weight_map(model: nn.Module, neuron_names: Sequence[str]):
    weights: dict[int, str] = {}
    norms: dict[int, str] = {}
    modules: dict[str, WeightLayer] = {}
    for name, module in model.named_modules():
        if any(name == n or name.startswith(n + ".") for n in neuron_names if n):
            continue
        if isinstance(module, WEIGHT_LAYERS):
            # setdefault: with tied weights (one Parameter in two modules) the first module names the weight,
            # so the layer feeding the first neuron is planned with its own input statistics
            weights.setdefault(id(module.weight), name)
            modules[name] = module
        elif isinstance(module, NORM_LAYERS):
            for p in module.parameters(recurse=False):
                norms[id(p)] = name
    return weights, norms, modules


def _pair_layers(record: ForwardRecord, specs: dict[str, NeuronSpec], weights, norms):
    """The LayerPlans of every neuron from a recorded pass: the layers its input traces back to, and the weights
    inside it. Returns ``(layers, unfed neurons, weight-less neurons, notes)``."""
    stats = {k: acc.result() for k, acc in record.accumulators.items()}
    graph = (record.boundaries, weights, norms, record.passes)
    layers: list[LayerPlan] = []
    unfed: list[str] = []
    weightless: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []
    for name, module in record.neurons:
        spec = specs[name]
        internal = _internal_layers(name, module, spec, stats, "example",
                                    input_source(record.input_nodes.get(name), *graph), notes)
        if name not in record.input_nodes:
            notes.append(f"neuron {name} was not called by the forward pass")
            layers.extend(internal)
            continue
        found, spikes = trace_sources(record.input_nodes[name], *graph)
        if not found and not any(i.role == "input" for i in internal):
            unfed.append(name)
            if spikes:
                weightless[name] = tuple(spikes)
        note_other_uses(name, found, record.later_inputs.get(name, ()), graph, notes)
        for layer_name, (path_norms, path_passes) in found.items():
            layer = record.modules[layer_name]
            fan_in, fan_out = fans(layer.weight)
            others = tuple(x for x in found if x != layer_name) + tuple(f"spikes of {s}" for s in spikes)
            layers.append(LayerPlan(
                name=f"{layer_name}.weight" if layer_name else "weight", module_name=layer_name, module=layer,
                parameter="weight", kind=type(layer).__name__, role="input", fan_in=fan_in, fan_out=fan_out,
                neuron_name=name, neuron=module, spec=spec, norm=path_norms[0] if path_norms else None,
                between=path_passes, residual=others if len(found) + len(spikes) > 1 else (),
                input_stats=stats.get(layer_name), source="example",
                **input_source(record.layer_inputs.get(layer_name), *graph)))
        layers.extend(internal)
    return layers, unfed, weightless, notes


def _plan_by_example(model, neurons, specs, example_input, forward) -> Plan:
    """Record one forward pass (every parameter requiring grad, so the graph reaches the weights), pair the
    neurons with the layers it shows, and leave the model as it was."""
    weights, norms, modules = _weight_map(model, [n for n, _ in neurons])
    record = ForwardRecord(model, neurons, modules)
    with preserved(model):
        for p in model.parameters():
            p.requires_grad_(True)
        try:
            record.install()
            record.run(example_input, forward)
            layers, unfed, weightless, notes = _pair_layers(record, specs, weights, norms)
        finally:
            record.remove()
    layers = _drop_shared(layers, notes)
    return Plan(layers, [(n, m, specs[n]) for n, m in neurons], unfed, "example", notes, weightless=weightless)


def _drop_shared(layers: list[LayerPlan], notes: list[str]) -> list[LayerPlan]:
    """A weight that feeds two different neurons is planned for the first one only, and the plan says so."""
    owners: dict[int, LayerPlan] = {}
    kept = []
    for entry in layers:
        first = owners.setdefault(id(entry.weight), entry)
        if first is entry:
            kept.append(entry)
        elif first.neuron is not entry.neuron:
            notes.append(f"{entry.name} also feeds {entry.neuron_name}; it is planned for {first.neuron_name} only")
    return kept


def _leaves_in_order(module: nn.Module, prefix: str, neuron_ids: dict[int, str]):
    """``(name, module)`` of the neurons and the childless modules under ``module``, in module order; a container
    with its own forward (whose order need not be the execution order) is refused."""
    if id(module) in neuron_ids:
        yield prefix, module
        return
    # _modules, not named_children(): the latter skips a module registered twice (one Linear used at two
    # places of a Sequential), and each use feeds its own neuron
    children = [(n, c) for n, c in module._modules.items() if c is not None]
    if not children:
        yield prefix, module
        return
    if not isinstance(module, SEQUENTIAL):
        raise PlanError(
            f"plan: {type(module).__name__} ({prefix or 'the model'}) has its own forward, so module order need "
            "not be execution order; pass example_input= (one batch as the model takes it)")
    for name, child in children:
        yield from _leaves_in_order(child, f"{prefix}.{name}" if prefix else name, neuron_ids)


def _plan_by_module_order(model, neurons, specs) -> Plan:
    """The plan of a model of sequential containers without an example input: each neuron paired with the weight
    layer before it in module order."""
    neuron_ids = {id(m): n for n, m in neurons}

    layers, unfed = [], []
    gain_notes: list[str] = []
    pending: Optional[tuple[str, WeightLayer]] = None
    norm: Optional[str] = None
    between: list[str] = []
    last_neuron: Optional[str] = None
    feed: dict[str, Any] = {"input_source": "data", "upstream": ()}
    for name, module in _leaves_in_order(model, "", neuron_ids):
        if isinstance(module, WEIGHT_LAYERS):
            if pending is None:  # a layer straight after a neuron (or the input) reads its spikes (or the data)
                feed = {"input_source": "neurons", "upstream": (last_neuron,)} if last_neuron else \
                    {"input_source": "data", "upstream": ()}
            else:
                feed = {"input_source": "layers", "upstream": ()}
            pending, norm, between = (name, module), None, []
        elif isinstance(module, NORM_LAYERS):
            norm = name
        elif id(module) in neuron_ids:
            spec = specs[name]
            neuron_feed = feed if pending is not None else (
                {"input_source": "neurons", "upstream": (last_neuron,)} if last_neuron else {"input_source": "data", "upstream": ()})
            internal = _internal_layers(name, module, spec, {}, "module-order", neuron_feed, gain_notes)
            if pending is None and not any(i.role == "input" for i in internal):
                unfed.append(name)
            if pending is not None:
                layer_name, layer = pending
                fan_in, fan_out = fans(layer.weight)
                layers.append(LayerPlan(
                    name=f"{layer_name}.weight", module_name=layer_name, module=layer, parameter="weight",
                    kind=type(layer).__name__, role="input", fan_in=fan_in, fan_out=fan_out, neuron_name=name,
                    neuron=module, spec=spec, norm=norm, between=tuple(between), source="module-order", **feed))
            layers.extend(internal)
            pending, norm, between = None, None, []
            last_neuron = name
        else:
            between.append(type(module).__name__)
    notes = ["no example input: layers paired by module order (sequential containers only); "
             "input statistics were not measured"] + gain_notes
    # as in the example walk: a weight shared by two layers (tied, or one module used twice) is planned once,
    # so the report lists one law per tensor
    layers = _drop_shared(layers, notes)
    return Plan(layers, [(n, m, specs[n]) for n, m in neurons], unfed, "module-order", notes)
