"""The copy relay's claim, checked on the example batch (issue 29, part 4).

``relay=1`` writes each copy layer's weight as :math:`g\\,P` (:func:`snn_initplug.init.relay_pattern`: output
``i`` takes input ``i mod fan_in``), with the jump :math:`g` chosen so that a neuron of the planned kind fires
exactly when its relayed input spikes. That holds for the neuron the law describes (one membrane, one
threshold, 0/1 input spikes); a neuron it does not describe (thresholds that differ per neuron, graded input
spikes, a second state such as snnTorch ``Synaptic``'s current) fires on other steps. So after the weights are
in place, one pass of the example batch compares, at every call of every copy layer, the neuron's spikes with
the spikes its pattern relays (the layer run with :math:`P` as its weight and no bias, on the input it
received): a copy layer whose spikes differ anywhere is refused, naming the layer, how many spikes differ and
the likely reason, and the caller puts the model back.

Before anything is drawn, :func:`copy_geometry` refuses a convolution whose pattern cannot copy at all: the
kernel centre of a "same"-padded, stride-1 convolution reads the output's own position, so channel ``c`` of the
layer copies channel ``c`` of its input pixel for pixel; a padding wider than the kernel's reach (border units
relaying the padding) or a transposed convolution that sums channels would not copy. A stride or a narrower
padding copies a subsampled or cropped map, and a change of the channel count copies channel ``i mod C_in``
(within its group): both are taken as the Linear path takes a narrower or wider layer, with a note.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch.func import functional_call

from .errors import InitError
from .init import relay_pattern
from .planning import LayerPlan, neuron_modules, preserved, reset_neuron
from .running import input_calls, mean_value, runner, unit_output
from .transaction import Snapshot, agree

__all__ = ["check_copies", "copy_geometry", "copy_refused", "verify_copies"]


def _relayed(layer: LayerPlan, x: torch.Tensor) -> torch.Tensor:
    """The layer's output with its weight the bare relay pattern and no bias: the input each unit relays."""
    weight = layer.weight
    replaced = {layer.parameter: relay_pattern(weight.shape, dtype=weight.dtype).to(weight.device)}
    owner = layer.parameter.rpartition(".")[0]
    bias_name = f"{owner}.bias" if owner else "bias"
    bias = layer.module.get_parameter(bias_name) if _has_parameter(layer.module, bias_name) else None
    if bias is not None:
        replaced[bias_name] = torch.zeros_like(bias)
    return functional_call(layer.module, replaced, (x,))


def copy_geometry(layer: LayerPlan) -> tuple[Optional[str], Optional[str]]:
    """(why the layer's relay pattern cannot copy, what its copy leaves out): ``(None, None)`` for a weight that
    is not a convolution's, or a "same"-padded stride-1 one, which copies its input map pixel for pixel.

    Output position ``o`` of a convolution relays input position ``o·s − p + d·(k // 2)`` (stride s, padding p,
    dilation d, kernel k, per dimension). Where that lies outside the input for some ``o`` (a padding wider than
    ``d·((k − 1) // 2)``, or an even kernel with "same" padding), border units relay the padding: they are silent
    whatever the input, not a copy, and the layer is refused. A stride, a narrower padding or an even kernel
    without padding relay one input position each, a subsampled, cropped or shifted map: accepted as a narrower
    Linear is (``P[i, i mod fan_in]`` drops inputs), with a note. A transposed convolution copies only at
    stride 1 with as many input as output channels and "same" padding."""
    owner = layer.module.get_submodule(layer.parameter.rpartition(".")[0])
    if not isinstance(owner, nn.modules.conv._ConvNd):
        return None, None
    kind, kernel, dilation, stride = type(owner).__name__, owner.kernel_size, owner.dilation, owner.stride
    if owner.padding == "same":
        same = tuple(d * (k - 1) // 2 == d * (k // 2) for k, d in zip(kernel, dilation))
        return (None if all(same) else f"its {kind} kernel {_dims(kernel)} with \"same\" padding has no centre "
                "tap: the border units would relay the padding (silent), not a copy"), None
    padding = (0,) * len(kernel) if isinstance(owner.padding, str) else tuple(int(p) for p in owner.padding)  # "valid"
    exact = tuple(d * (k // 2) for k, d in zip(kernel, dilation))
    if owner.transposed:
        if any(x != 1 for x in stride) or padding != exact or owner.in_channels != owner.out_channels \
                or any(owner.output_padding):
            return (f"its {kind} copies only at stride 1, with as many input as output channels and padding "
                    f"{_dims(exact)} (it has stride {_dims(stride)}, {owner.in_channels} -> {owner.out_channels} "
                    f"channels, padding {_dims(padding)}): it would sum several inputs or grow the map"), None
        return None, None
    widest = tuple(d * ((k - 1) // 2) for k, d in zip(kernel, dilation))
    if any(p > w for p, w in zip(padding, widest)):
        return (f"its {kind} pads {_dims(padding)} where kernel {_dims(kernel)} with dilation {_dims(dilation)} "
                f"allows at most {_dims(widest)}: the border units would relay the padding (silent), not a copy"), None
    if padding == exact and all(x == 1 for x in stride):
        return None, None
    return None, (f"its {kind} (stride {_dims(stride)}, padding {_dims(padding)}, kernel {_dims(kernel)}) copies a "
                  "subsampled, cropped or shifted map: each unit one input position, the others left out, as a "
                  "narrower Linear leaves inputs out")


def copy_refused(entry: str, name: str, why: str) -> InitError:
    """The error of a copy layer that cannot or does not copy, with the way out."""
    return InitError(f"{entry}: relay=1 (the copy relay): {name} {why}; use relay < 1 for this layer "
                     f"(overrides={{{name!r}: {{'relay': 0.9}}}}) or skip it; the model is unchanged")


def _dims(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def _has_parameter(module: nn.Module, name: str) -> bool:
    try:
        return module.get_parameter(name) is not None
    except AttributeError:
        return False


def _reason(layer: LayerPlan, inputs: Sequence[torch.Tensor]) -> str:
    """What about this neuron or its input the copy law does not describe, as far as it can be seen."""
    spec, reasons = layer.spec, []
    threshold = spec.threshold
    if isinstance(threshold, torch.Tensor) and threshold.numel() > 1 and bool((threshold != threshold.flatten()[0]).any()):
        reasons.append(f"its thresholds differ per neuron ({float(threshold.min()):.3g} to "
                       f"{float(threshold.max()):.3g}; the jump is set for their mean {mean_value(threshold):.3g})")
    values = torch.unique(torch.cat([x.detach().flatten() for x in inputs])) if inputs else torch.empty(0)
    graded = values[(values != 0) & (values != 1)]
    if graded.numel():
        reasons.append(f"its input spikes are not 0/1 (values such as {float(graded[0]):.3g}: graded spikes "
                       "upstream, e.g. snnTorch graded_spikes_factor)")
    if not reasons:
        reasons.append(f"its dynamics are not the single-membrane {spec.reset}-reset neuron the copy law assumes "
                       f"(e.g. a synaptic current, as snnTorch Synaptic)")
    return "; ".join(reasons)


def check_copies(model: nn.Module, copies: Sequence[LayerPlan], run: Callable[[], Any], entry: str) -> None:
    """Run ``run`` (one pass of the example batch, from rest; the model's states are put back afterwards) and
    raise an :class:`InitError` naming the first copy layer whose neuron's spikes differ from the spikes its
    pattern relays at any call."""
    inputs: dict[str, list[Optional[torch.Tensor]]] = {layer.name: [] for layer in copies}
    outputs: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in copies}
    handles = []
    for layer in copies:
        handles.append(layer.module.register_forward_pre_hook(
            lambda m, args, key=layer.name: inputs[key].append(args[0].detach() if args else None)))
        handles.append(layer.neuron.register_forward_hook(
            lambda m, args, out, key=layer.name: outputs[key].append(unit_output(m, out).detach())))
    try:
        with preserved(model), torch.no_grad():
            for _, neuron in neuron_modules(model):  # from rest, as initialize's statistics were measured
                reset_neuron(neuron)
            run()
    finally:
        for handle in handles:
            handle.remove()
    for layer in copies:
        problem = _mismatch(layer, inputs[layer.name], outputs[layer.name])
        if problem is not None:
            raise copy_refused(entry, layer.name, f"does not copy on the example batch: {problem}")


def _mismatch(layer: LayerPlan, inputs: list[Optional[torch.Tensor]], outputs: list[torch.Tensor]) -> Optional[str]:
    if not outputs or len(inputs) != len(outputs) or any(not isinstance(x, torch.Tensor) for x in inputs):
        return (f"its layer ran {len(inputs)} time(s) and its neuron {layer.neuron_name} {len(outputs)} time(s) in "
                "the pass, so the copy cannot be checked call by call")
    differ = total = 0
    for x, spikes in zip(inputs, outputs):
        assert x is not None
        relayed = _relayed(layer, x)
        if relayed.numel() != spikes.numel():
            return (f"the layer's output ({tuple(relayed.shape)}) reaches neuron {layer.neuron_name} as "
                    f"{tuple(spikes.shape)} (through {', '.join(layer.between) or 'another module'}), so the copy "
                    "cannot be checked")
        fired, relayed_spike = spikes.reshape(-1) != 0, relayed.reshape(-1) != 0
        differ += int((fired != relayed_spike).sum())
        total += fired.numel()
    if differ:
        return (f"{differ} of the {total} spike/no-spike values of its neuron {layer.neuron_name} differ from the "
                f"input it relays, because {_reason(layer, [x for x in inputs if x is not None])}")
    return None


def verify_copies(model: nn.Module, copies: Sequence[tuple[LayerPlan, Optional[int]]], example_input: Any,
                  forward: Any, group: Any, saved: Snapshot, entry: str = "initialize") -> list[str]:
    """After the copy relay's weights are written: check them (:func:`check_copies`, on one pass of
    ``example_input``, over the T steps of the copy's horizon for a model called once per step), agree across
    the ranks, and on a failure on any rank put every written tensor back (``saved``) and raise. Without an
    example batch nothing can be run: the returned note says the copy was not checked."""
    if not copies:
        return []
    if example_input is None and forward is None:
        return [f"relay=1: the copy of {', '.join(layer.name for layer, _ in copies)} was not checked (no "
                "example_input to run); pass one to have initialize check it"]
    steps = max((t for _, t in copies if t is not None), default=None)
    error: Optional[Exception] = None
    try:
        calls = input_calls(entry, example_input, steps if forward is None else None)
        check_copies(model, [layer for layer, _ in copies], runner(model, example_input, calls, steps, forward),
                     entry)
    except Exception as exc:  # noqa: BLE001 - every rank learns of it before any raises
        error = exc
    try:
        agree(entry, 0, error, group)
    except BaseException:
        saved.restore()
        raise
    return []
