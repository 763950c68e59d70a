"""Is a neuron's input affine in its scale? The module whose output is the neuron's input, and the part of that
output that does not scale (a bias, BatchNorm's β): what lets a search re-run the neuron alone."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..planning import NORM_LAYERS, WEIGHT_LAYERS
from ..running import Group, unit_output


def affine_owners(model: nn.Module, groups: list[Group]) -> dict[int, nn.Module]:
    """group id -> the module whose output is linear in the group's one scaled parameter, plus a constant:
    a Linear/Conv with its ``weight`` (bias = the constant) or a norm layer with its ``weight`` γ (β)."""
    return {key: parts[0][0] for key, parts in affine_owner_lists(model, groups).items() if len(parts) == 1}


def affine_owner_lists(model: nn.Module, groups: list[Group]) -> dict[int, list[tuple[nn.Module, torch.Tensor]]]:
    """group id -> ``(module, parameter)`` for each of the group's scaled parameters, when every one is the
    ``weight`` of such a module (a block whose neuron sums two BatchNorms, Spiking ResNet's downsampling)."""
    by_param = {id(m.weight): m for m in model.modules()
                if isinstance(m, WEIGHT_LAYERS + NORM_LAYERS) and isinstance(getattr(m, "weight", None), torch.Tensor)}
    return {id(g): [(by_param[id(p)], p) for _, p in g.params] for g in groups
            if g.params and all(id(p) in by_param for _, p in g.params)}


def same_values(z: torch.Tensor, out: torch.Tensor) -> bool:
    """The neuron's input is the scaled module's output itself, or a reshape of it (SpikingJelly's
    [T·B, ...] <-> [T, B, ...] containers): nothing was added, pooled or multiplied in between."""
    return z is out or (z.numel() == out.numel() and z.dtype == out.dtype and torch.equal(z.reshape(-1), out.reshape(-1)))


def scaled_output(module: nn.Module, param: torch.Tensor, args: tuple, scale: float) -> torch.Tensor:
    """The module's output with ``param`` times ``scale``, by ``functional_call`` on copies: neither the
    parameter nor BatchNorm's running statistics move."""
    name = next(n for n, p in module.named_parameters(recurse=False) if p is param)
    replaced = {n: b.detach().clone() for n, b in module.named_buffers(recurse=False)}
    replaced[name] = param.detach() * scale
    with torch.no_grad():
        return unit_output(module, torch.func.functional_call(module, replaced, args))


# forwards that are affine in the weight by construction (torch's own; a subclass that keeps them, such as
# SpikingJelly's layer.Linear, too)
_AFFINE_FORWARDS = frozenset({nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward})


_CONV_FORWARDS = frozenset({nn.Conv1d._conv_forward, nn.Conv2d._conv_forward, nn.Conv3d._conv_forward})


def affine_by_construction(module: nn.Module, param: torch.Tensor) -> bool:
    """torch's own Linear/Conv forward on its own ``weight``, no hook and no parametrization on the module: the
    check at scale 2 could not fail, and on a 100 M-parameter classifier it costs more than the search."""
    cls = type(module)
    if cls.forward not in _AFFINE_FORWARDS or param is not getattr(module, "weight", None):
        return False
    if isinstance(module, nn.modules.conv._ConvNd) and getattr(cls, "_conv_forward", None) not in _CONV_FORWARDS:
        return False
    global_hooks = nn.modules.module
    return not (module._forward_hooks or module._forward_pre_hooks or global_hooks._global_forward_hooks
                or global_hooks._global_forward_pre_hooks or getattr(module, "parametrizations", None))


def affine_offset(module: nn.Module, param: torch.Tensor, args: tuple, out: torch.Tensor,
                   by_construction: bool = False) -> Optional[torch.Tensor]:
    """The part of ``out`` that does not scale with ``param`` (a bias, BatchNorm's β: the output at weight 0),
    or None when the output is not affine in the scale (a subclass that clips its weight, a hook): checked at
    scale 2, where it must be 2·out − offset."""
    if by_construction:  # :func:`affine_by_construction`, decided before any hook of ours was installed
        bias = getattr(module, "bias", None)  # the output at weight 0, without running a zero weight
        if bias is None:
            return torch.zeros((), dtype=out.dtype, device=out.device).expand_as(out)
        channels = bias.detach().view(-1, *([1] * (out.dim() - 2))) if isinstance(module, nn.modules.conv._ConvNd) \
            else bias.detach()
        return channels.to(out.dtype).expand_as(out)
    offset = scaled_output(module, param, args, 0.0)
    if not on_a_line(offset, out, scaled_output(module, param, args, 2.0)):
        return None
    return offset


def on_a_line(at0: torch.Tensor, at1: torch.Tensor, at2: torch.Tensor) -> bool:
    """The values at scales 0, 1 and 2 lie on a line, ``at2 = 2·at1 − at0``, up to float32 rounding."""
    expected = 2 * at1 - at0
    return at2.shape == expected.shape and torch.allclose(
        at2, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1.0)))
