"""``spikeinit``'s surrogate shaping at the model level: each neuron's surrogate at its shape α*, prepared before
anything is written, installed right after the weights, and undone with them.

The adapters say how a neuron's surrogate is rebuilt and installed (:class:`~snn_initplug.adapters.SurrogateLever`):
a new object of the same family for every neuron, so a surrogate shared by several neurons (SpikingJelly's
default instance, one snnTorch closure passed to every layer) is never changed and no change leaks into
another layer. The old objects are kept and put back, the same objects, on any failure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .adapters import SurrogateLever, surrogate_lever
from .errors import UnsupportedNeuronError
from .transaction import Snapshot, write_all

__all__ = ["SurrogateWrite", "SurrogateSnapshot", "write_weights_and_surrogates"]


@dataclass(frozen=True)
class SurrogateWrite:
    """One neuron's new surrogate: ``new`` (of the family of ``lever``) at shape ``alpha``."""

    neuron_name: str
    lever: SurrogateLever
    alpha: float
    new: Callable


class SurrogateSnapshot:
    """The surrogate objects the neurons of ``model`` hold now; :meth:`restore` puts the same objects back."""

    def __init__(self, model: nn.Module):
        self.saved: list[tuple[nn.Module, SurrogateLever]] = []
        for module in model.modules():
            try:
                lever = surrogate_lever(module)
            except UnsupportedNeuronError:  # an unsupported neuron: nothing of it is ever reshaped
                continue
            if lever is not None:
                self.saved.append((module, lever))

    def restore(self) -> None:
        """Put back the objects that changed (one left alone is not written: restoring never fails on a neuron
        that refused the new one)."""
        for module, lever in self.saved:
            now = surrogate_lever(module)
            if now is None or now.current is not lever.current:
                lever.install(lever.current)


def write_weights_and_surrogates(writes: list[tuple[torch.Tensor, torch.Tensor]], saved, surrogates: list[SurrogateWrite],
                                 model: nn.Module) -> None:
    """The weights (:func:`snn_initplug.transaction.write_all`), then the surrogates; a failure in either puts
    every weight and every surrogate object back as it was."""
    if not surrogates:
        write_all(writes, saved)
        return
    saved = saved if saved is not None else Snapshot([target for target, _ in writes])
    old = SurrogateSnapshot(model)
    write_all(writes, saved)
    try:
        for write in surrogates:
            write.lever.install(write.new)
    except BaseException:
        saved.restore()
        old.restore()
        raise
