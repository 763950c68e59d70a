r"""Diagnostics of a spiking network at initialization: firing, membrane and gradient statistics per neuron layer.

:func:`diagnose` runs one forward pass of an example batch (and, with a target or a loss, one backward pass)
and measures, for every neuron layer in execution order (its *depth*):

* the firing rate :math:`r_j = \frac{1}{N}\sum_{n} s_j[n]` of each neuron :math:`j` over the :math:`N` samples
  and time steps, reported as the mean :math:`\bar r` and the spread :math:`\operatorname{sd}_j(r_j)` over the
  neurons of the layer, plus the fractions of *silent* (:math:`r_j = 0`) and *saturated* (:math:`r_j = 1`)
  neurons;
* the membrane the spike is computed from, relative to the threshold:
  :math:`\mathbb{E}[u/\theta]` and :math:`\operatorname{sd}(u/\theta)` over neurons, samples and steps
  (snnTorch: the membrane after the update, before the reset; SpikingJelly: :math:`H[t]`, before the reset);
* the fraction of membrane values inside the surrogate's effective support,
  :math:`P\big(|h(u-\theta)| > 0.01 \max_x |h(x)|\big)`, with :math:`h` evaluated by autograd through the
  neuron's own spike function (:func:`~snn_initplug.surrogate.surrogate_derivative`): outside it, almost no
  gradient passes the neuron;
* with ``target`` or ``loss_fn``: the gradient reaching each layer,
  :math:`\lVert \partial L / \partial W \rVert_2` for every weight feeding the neuron (the layers of
  :func:`~snn_initplug.planning.plan`), and their root sum of squares per neuron layer.

How the membrane is observed. The argument of the spike function is :math:`x = u - \theta`, so the neuron's
spike function (snnTorch ``spike_grad``, SpikingJelly ``surrogate_function``, or the attribute holding a
registered neuron's ``NeuronSpec.surrogate``) is replaced for the pass by a recorder that stores ``x`` and
returns the original function's output, so spikes and gradients are unchanged:

* a neuron whose adapter says ``fires_on_last_call`` (snnTorch, which first calls ``spike_grad`` on the
  *previous* membrane for the detached reset signal) keeps only the last call of each forward call;
* a neuron whose adapter has a ``surrogate_path`` is switched to the code path that calls its spike function
  for the pass (SpikingJelly 0.0.0.0.14: training mode and the ``torch`` backend, the neuron module alone);
  SpikingJelly 2.x runs a fused kernel for its built-in surrogates, and the recorder, a module defined
  outside its surrogate module, makes it take its torch reference path (the same spikes and gradients).

A ``forward_hook`` on the neuron counts spikes in its output (the first tensor it returns; any non-zero
value is a spike, so graded spikes count) and files the recorded membranes. Everything is restored afterwards
(:func:`~snn_initplug.planning.preserved`: parameters are never written, buffers, neuron states, ``requires_grad``
flags and the RNG are put back; the spike functions, training flags and backends are put back; no ``.grad`` is
set, since gradients come from :func:`torch.autograd.grad`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import DiagnoseError
from .guard import entry_point
from .observation import SUPPORT_FRACTION, MembraneStats, Observation, SpikeCounter, unobserved_notes
from .planning import Plan, first_tensor, preserved, run_model
from .running import input_calls, mean_value, plan_for_input, stepped_forward
from .tables import render_table, short_number
from .transaction import all_finite

__all__ = [
    "diagnose",
    "Diagnosis",
    "LayerDiagnosis",
    "DiagnoseError",
    "default_loss",
    "compare",
    "compare_methods",
    "plot_comparison",
    "SUPPORT_FRACTION",
]





# --------------------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------------------
@dataclass
class LayerDiagnosis:
    """Statistics of one neuron layer. Membrane values are in units of the threshold (u/θ)."""

    neuron: str  # module name of the neuron layer
    kind: str  # its class
    depth: int  # position in execution order, from 0
    layers: tuple[str, ...]  # the weights feeding it
    threshold: float  # θ (the mean, for per-neuron thresholds)
    neurons: int  # neurons in the layer
    observations: int  # samples × time steps seen by each neuron
    rate: float  # mean firing rate over neurons
    rate_std: float  # spread of the per-neuron rates
    silent: float  # fraction of neurons that never fire
    saturated: float  # fraction of neurons that fire at every step
    membrane_mean: Optional[float] = None  # E[u/θ]
    membrane_std: Optional[float] = None  # sd(u/θ)
    in_support: Optional[float] = None  # P(|h(u-θ)| > 1% of its peak)
    grad_norm: Optional[float] = None  # sqrt(Σ ||dL/dW||²) over the layers feeding the neuron
    layer_grad_norms: dict[str, float] = field(default_factory=dict)


@dataclass
class Diagnosis:
    """Per-layer diagnostics of one model; prints as a table."""

    layers: list[LayerDiagnosis]
    loss: Optional[float] = None
    loss_description: Optional[str] = None
    label: Optional[str] = None  # e.g. the initialization method
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerDiagnosis:
        for row in self.layers:
            if row.neuron == name:
                return row
        raise KeyError(name)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: Optional[str] = None, **kwargs) -> str:
        """The record as JSON (``None`` for quantities not measured); also written to ``path`` when given."""
        kwargs.setdefault("indent", 2)
        text = json.dumps(self.to_dict(), default=str, **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        return text

    def __str__(self) -> str:
        header = ["depth", "neuron", "kind", "n", "rate", "rate sd", "silent", "saturated", "E[u]/θ", "sd(u)/θ",
                  "in support", "|dL/dW|"]
        table = [header]
        for r in self.layers:
            table.append([str(r.depth), r.neuron, r.kind, str(r.neurons), short_number(r.rate), short_number(r.rate_std),
                          short_number(r.silent), short_number(r.saturated), short_number(r.membrane_mean), short_number(r.membrane_std),
                          short_number(r.in_support), short_number(r.grad_norm)])
        lines = render_table(table)
        if self.label:
            lines.insert(0, f"[{self.label}]")
        if self.loss is not None:
            lines.append(f"loss {self.loss:.6g} ({self.loss_description})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path: Optional[str] = None, ax=None):
        """Rate, membrane sd/θ and gradient norm against depth, in three panels.

        ``ax``: three matplotlib Axes to draw into (default: a new figure). Saved to ``path`` when given.
        Returns the figure.
        """
        return plot_comparison({self.label or "model": self}, path=path, ax=ax)


# --------------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------------
def default_loss(output: Any, target: torch.Tensor) -> tuple[torch.Tensor, str]:
    r"""The loss used when only ``target`` is given. Returns ``(loss, description)``.

    The output (its first tensor, for a tuple) is averaged over its leading dimensions (time first, as both
    frameworks stack it) until it matches the target:

    * integer targets (class indices, shape ``[B]``): cross-entropy of the time-averaged output
      :math:`\bar o = \frac{1}{T}\sum_t o_t` of shape ``[B, C]``, :math:`L = -\frac{1}{B}\sum_b \log
      \operatorname{softmax}(\bar o_b)_{y_b}`;
    * floating targets: :math:`L = \operatorname{mean}\,(\bar o - y)^2` with :math:`\bar o` of the target's shape.
    """
    out = first_tensor(output)
    if out is None:
        raise DiagnoseError("the model's output contains no tensor to compute a loss from")
    target = torch.as_tensor(target, device=out.device)
    classes = not (target.is_floating_point() or target.is_complex())
    wanted = target.dim() + (1 if classes else 0)
    if out.dim() < wanted:
        raise DiagnoseError(f"the output has shape {tuple(out.shape)}, too few dimensions for a target of shape "
                            f"{tuple(target.shape)}")
    while out.dim() > wanted:
        out = out.mean(0)
    if classes:
        if out.shape[:-1] != target.shape:
            raise DiagnoseError(f"class targets of shape {tuple(target.shape)} do not match the time-averaged "
                                f"output of shape {tuple(out.shape)}")
        classes_out = out.shape[-1]
        if target.numel() and not (0 <= int(target.min()) and int(target.max()) < classes_out):
            raise DiagnoseError(f"class targets must lie in [0, {classes_out}) for an output of {classes_out} "
                                f"classes, got values in [{int(target.min())}, {int(target.max())}]")
        return F.cross_entropy(out.float(), target.long()), "cross-entropy of the time-averaged output"
    if out.shape != target.shape:
        raise DiagnoseError(f"the target has shape {tuple(target.shape)}, the time-averaged output "
                            f"{tuple(out.shape)}")
    return F.mse_loss(out, target.to(out.dtype)), "MSE of the time-averaged output"


def _loss(output: Any, target, loss_fn) -> tuple[torch.Tensor, str]:
    if loss_fn is not None:
        loss, description = loss_fn(output), getattr(loss_fn, "description", "loss_fn")
    else:
        loss, description = default_loss(output, target)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise DiagnoseError(f"the loss must be a scalar tensor, got {type(loss).__name__} "
                            f"{tuple(getattr(loss, 'shape', ()))}")
    if not loss.requires_grad:
        raise DiagnoseError("the loss does not depend on any weight (no gradient path from the output)")
    return loss.reshape(()), description


# --------------------------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------------------------
def _weights_by_neuron(p: Plan) -> dict[str, list[tuple[str, torch.Tensor]]]:
    feeding: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for entry in p.layers:
        feeding.setdefault(entry.neuron_name, []).append((entry.name, entry.weight))
    return feeding


def _gradient_norms(loss: torch.Tensor, feeding: dict[str, list[tuple[str, torch.Tensor]]]) -> dict[str, float]:
    """||dL/dW||₂ of every feeding weight, by torch.autograd.grad (nothing is accumulated into .grad)."""
    named: dict[str, torch.Tensor] = {}
    for entries in feeding.values():
        for name, weight in entries:
            named.setdefault(name, weight)
    names, weights = list(named), list(named.values())
    grads = torch.autograd.grad(loss, weights, allow_unused=True) if weights else []
    return {name: 0.0 if g is None else float(g.detach().double().norm()) for name, g in zip(names, grads)}


@entry_point("diagnose", DiagnoseError)
def diagnose(model: nn.Module, example_input: Any = None, target: Any = None,
             loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
             forward: Optional[Callable[[nn.Module, Any], Any]] = None, *, steps: Optional[int] = None,
             reset_state: bool = True, label: Optional[str] = None) -> Diagnosis:
    """Firing, membrane and gradient statistics of every neuron layer of ``model`` on ``example_input``.

    Args:
        model: an snnTorch or SpikingJelly model (or one with neurons registered with ``register_neuron``).
        example_input: one batch as the model takes it (a tensor, or a tuple of positional arguments).
        target: optional targets for the default loss (see :func:`default_loss`): class indices give the
            cross-entropy of the time-averaged output, floating targets the MSE of the time-averaged output.
        loss_fn: optional ``callable(output) -> scalar loss`` instead of ``target``.
        forward: optional ``callable(model, example_input) -> output`` for models that need more than
            ``model(example_input)`` (a loop over time steps, a reset first, ...).
        steps: for a model called once per time step (snnTorch ``init_hidden`` stacks, SpikingJelly
            single-step nets): the batch is presented at ``steps`` calls, as ``initialize(..., steps=T)`` does
            (a list of per-step inputs is taken as it is); the outputs are stacked over time for the loss.
        reset_state: start from the neurons' resting state (SpikingJelly ``reset()``, snnTorch ``reset_mem()``)
            rather than from whatever state the last batch left; the state is restored afterwards either way.
        label: a name for the record (e.g. the initialization method).

    Gradient norms are measured only with ``target`` or ``loss_fn``. The model is left as it was.

    Returns:
        Diagnosis: one :class:`LayerDiagnosis` per neuron layer (rate, silent and saturated fractions, membrane
        mean and sd over θ, the share of the membrane inside the surrogate's support, the gradient norm);
        printing it gives a table, ``save`` writes JSON and ``plot`` draws it.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(256, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> x = torch.rand(64, 784)
        >>> _ = sip.initialize(net, "calibrated", x, steps=4, target_rate=0.1)
        >>> steps = lambda model, x: [model(x) for _ in range(4)]  # how this model runs: once per time step
        >>> [round(layer.rate, 2) for layer in sip.diagnose(net, x, forward=steps).layers]
        [0.1, 0.1]
    """
    if target is not None and loss_fn is not None:
        raise DiagnoseError("diagnose: give target= or loss_fn=, not both")
    if example_input is None and forward is None:
        raise DiagnoseError("diagnose: needs example_input= (one batch as the model takes it) to run the model")
    first = first_tensor(example_input)
    if first is not None and first.numel() == 0:  # no spike to count: the rates would be 0/0
        raise DiagnoseError("diagnose: example_input has no elements (an empty batch has no rates)")
    if steps is not None and forward is not None:
        raise DiagnoseError("diagnose: give steps= (the model called once per step) or forward= (your own time "
                            "loop), not both")
    calls = input_calls("diagnose", example_input, steps) if forward is None else [example_input]
    if not calls:
        raise DiagnoseError("diagnose: example_input is an empty list (give one input per time step)")
    p = plan_for_input(model, example_input, calls, forward)
    if forward is None and (len(calls) > 1 or steps is not None):  # as runner() decides, with the outputs stacked
        forward = stepped_forward(calls)
    feeding = _weights_by_neuron(p)
    want_grad = target is not None or loss_fn is not None
    observed = Observation()
    loss_value = loss_description = None
    grad_norms: dict[str, float] = {}
    with preserved(model), contextlib.ExitStack() as undo:
        observed.install(p, undo, reset_state)
        if want_grad:
            for entries in feeding.values():
                for _, weight in entries:
                    weight.requires_grad_(True)  # frozen layers too; preserved() restores the flags
        with torch.set_grad_enabled(want_grad):
            try:
                output = run_model(model, example_input, forward)
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise DiagnoseError(f"diagnose: the model does not run on the example input: "
                                    f"{type(exc).__name__}: {exc}") from exc
            if want_grad:
                loss, loss_description = _loss(output, target, loss_fn)
                loss_value = float(loss.detach())
                grad_norms = _gradient_norms(loss, feeding)
    notes = observed.notes + unobserved_notes(p, observed) + list(p.notes)
    broken = [n for n, q in model.named_parameters() if q.is_floating_point() and not all_finite(q)]
    if broken:  # NaN spikes count as non-zero: a NaN parameter would pass for a saturated layer
        notes.insert(0, f"non-finite values (NaN/Inf) in parameters {', '.join(broken)}: the statistics below "
                        "are not meaningful")
    layers = [_layer_record(depth, name, p, observed.counters[name], observed.membranes.get(name), feeding,
                            grad_norms, want_grad) for depth, name in enumerate(observed.order)]
    return Diagnosis(layers, loss_value, loss_description, label, notes)


def _layer_record(depth, name, p: Plan, counter: SpikeCounter, membrane: Optional[MembraneStats],
                  feeding, grad_norms: dict[str, float], want_grad: bool) -> LayerDiagnosis:
    module, spec = next((m, s) for n, m, s in p.neurons if n == name)
    names = tuple(layer for layer, _ in feeding.get(name, []))
    rates = counter.rates()
    mean, std, support = membrane.result() if membrane is not None else (None, None, None)
    per_layer = {layer: grad_norms[layer] for layer in names if layer in grad_norms}
    grad = math.sqrt(sum(v * v for v in per_layer.values())) if want_grad and names else None
    return LayerDiagnosis(
        neuron=name, kind=type(module).__name__, depth=depth, layers=names,
        threshold=mean_value(spec.threshold), neurons=rates.numel(), observations=counter.observations,
        rate=float(rates.mean()) if rates.numel() else 0.0,
        rate_std=float(rates.std(unbiased=False)) if rates.numel() else 0.0,
        silent=float((rates == 0).double().mean()) if rates.numel() else 0.0,
        saturated=float((rates == 1).double().mean()) if rates.numel() else 0.0,
        membrane_mean=mean, membrane_std=std, in_support=support, grad_norm=grad, layer_grad_norms=per_layer)


# --------------------------------------------------------------------------------------------------------
# Several records side by side
# --------------------------------------------------------------------------------------------------------
def compare_methods(model: nn.Module, example_input: Any, methods: Iterable[Optional[str]], *, target: Any = None,
                    loss_fn=None, forward=None, seed: int = 0, **options) -> dict[str, Diagnosis]:
    """``{method: diagnose(copy of model initialized with method)}``; ``None`` stands for the model as built.

    Each copy is a ``copy.deepcopy`` of ``model`` (left untouched), initialized with a generator seeded by
    ``seed`` and the method's ``options``.

    Args:
        model: the network (not changed).
        example_input: one batch as the model takes it.
        methods: method names for :func:`~snn_initplug.initialize`, ``None`` for the model as built.
        target: optional targets for the default loss (see :func:`diagnose`).
        loss_fn: optional ``callable(output) -> scalar loss`` instead of ``target``.
        forward: optional ``callable(model, example_input)`` running the model.
        seed: the seed of every method's generator.
        **options: options for every method.

    Returns:
        dict[str, Diagnosis]: one diagnosis per method, for :func:`compare` and :func:`plot_comparison`.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(256, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> steps = lambda model, x: [model(x) for _ in range(4)]
        >>> records = sip.diagnostics.compare_methods(net, torch.rand(64, 784), ["kaiming_normal", "spike_aware"], forward=steps)
        >>> list(records)
        ['kaiming_normal', 'spike_aware']
        >>> print(sip.diagnostics.compare(records))  # doctest: +ELLIPSIS
        depth  neuron  rate [kaiming_normal]  sd(u)/θ [kaiming_normal]  |dL/dW| [kaiming_normal]  rate...
        ...
    """
    from .apply import initialize

    records = {}
    for method in methods:
        try:
            twin = copy.deepcopy(model)
        except Exception as exc:  # noqa: BLE001 - e.g. non-leaf neuron states left by a training step
            raise DiagnoseError(f"compare_methods: the model cannot be copied ({type(exc).__name__}: {exc}); "
                                "reset its neuron states first") from exc
        if method is not None:
            initialize(twin, method, example_input, generator=torch.Generator().manual_seed(seed), forward=forward,
                       **options)
        label = method or "as built"
        records[label] = diagnose(twin, example_input, target=target, loss_fn=loss_fn, forward=forward, label=label)
    return records


# (attribute, column name): the same names in the tables and on the plots' axes
_QUANTITIES = (("rate", "rate"), ("membrane_std", "sd(u)/θ"), ("grad_norm", "|dL/dW|"))


def compare(records: Mapping[str, Diagnosis]) -> str:
    """A text table with one row per neuron layer and, for each record, its rate, sd(u)/θ and gradient norm.

    Args:
        records: ``{label: Diagnosis}``, e.g. from :func:`compare_methods`.

    Returns:
        str: the table (see the example of :func:`compare_methods`).
    """
    if not records:
        return "(no records)"
    labels = list(records)
    depth_names = _layer_names(records)
    header = ["depth", "neuron"] + [f"{quantity} [{label}]" for label in labels for _, quantity in _QUANTITIES]
    table = [header]
    for depth, name in enumerate(depth_names):
        row = [str(depth), name]
        for label in labels:
            try:
                entry = records[label].layer(name)
            except KeyError:
                row += ["-"] * len(_QUANTITIES)
                continue
            row += [short_number(getattr(entry, key)) for key, _ in _QUANTITIES]
        table.append(row)
    return "\n".join(render_table(table))


def _layer_names(records: Mapping[str, Diagnosis]) -> list[str]:
    names: list[str] = []
    for record in records.values():
        for entry in record.layers:
            if entry.neuron not in names:
                names.append(entry.neuron)
    return names


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting diagnostics needs matplotlib: pip install matplotlib "
                          "(or the 'examples' extra of snn-initplug)") from exc
    return Figure


def plot_comparison(records: Mapping[str, Diagnosis], path: Optional[str] = None, ax: Optional[Sequence] = None):
    """One line per record in three panels against depth: firing rate, membrane sd(u)/θ and gradient norm
    (log scale). Needs matplotlib.

    Args:
        records: ``{label: Diagnosis}``, e.g. from :func:`compare_methods`.
        path: where to save the figure (any format matplotlib writes), or None.
        ax: three matplotlib Axes to draw on (default: a new figure).

    Returns:
        matplotlib.figure.Figure: the figure.

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> records = sip.diagnostics.compare_methods(net, torch.rand(64, 784), [None, "ikun"])
        >>> fig = sip.diagnostics.plot_comparison(records)
        >>> len(fig.axes)
        3
    """
    Figure = _matplotlib_figure()
    if ax is None:
        figure = Figure(figsize=(12, 3.6), layout="constrained")
        axes = figure.subplots(1, 3)
    else:
        axes = list(ax) if not hasattr(ax, "flat") else list(ax.flat)
        if len(axes) != 3:
            raise DiagnoseError(f"plot: ax must be three Axes (rate, membrane, gradient), got {len(axes)}")
        figure = axes[0].figure
    names = _layer_names(records)
    positive = {key: True for key, _ in _QUANTITIES}
    for label, record in records.items():
        for panel, (key, _) in zip(axes, _QUANTITIES):
            points = [(names.index(e.neuron), getattr(e, key)) for e in record.layers if getattr(e, key) is not None]
            if points:
                xs, ys = zip(*points)
                panel.plot(xs, ys, marker="o", label=label)
                positive[key] = positive[key] and min(ys) > 0
    for panel, (key, column) in zip(axes, _QUANTITIES):
        panel.set_ylabel(column)
        panel.set_xlabel("depth · neuron")
        panel.set_xticks(range(len(names)))
        panel.set_xticklabels([f"{depth} · {name}" for depth, name in enumerate(names)], rotation=45, ha="right",
                              fontsize="small")
        if key == "grad_norm" and panel.lines and positive[key]:  # norms span decades across depth
            panel.set_yscale("log")
    if len(records) > 1:
        axes[0].legend(fontsize="small")
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
