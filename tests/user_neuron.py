"""A framework-free neuron written the way a user would, shared by the tests (and importable by the processes
the distributed tests spawn): u = decay·u + x, a hard spike with a sigmoid straight-through surrogate, subtract
reset; registered with the public API."""
import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

import snn_initplug as sip


class MyLIF(nn.Module):
    def __init__(self, decay=0.8, theta=1.0):
        super().__init__()
        self.decay, self.theta = decay, theta
        self.register_buffer("u", torch.zeros(()), persistent=False)

    def forward(self, x):
        self.u = self.decay * self.u + x
        soft = torch.sigmoid(4 * (self.u - self.theta))
        spikes = (soft > 0.5).float() + soft - soft.detach()
        self.u = self.u - spikes.detach() * self.theta
        return spikes


def scale_theta(module, factor):
    """The threshold lever a user registers (``register_neuron(scale_threshold=...)``): returns the undo."""
    previous = module.theta
    module.theta = previous * factor

    def undo():
        module.theta = previous

    return undo


def register(threshold_lever: bool = False):
    sip.register_neuron(MyLIF, to_spec=lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.decay,
                                                               surrogate=lambda x: torch.sigmoid(4 * x), name="MyLIF"),
                        scale_threshold=scale_theta if threshold_lever else None)


def unregister():
    sip.unregister_neuron(MyLIF)


@contextlib.contextmanager
def registered(threshold_lever: bool = False) -> Iterator[None]:
    """MyLIF registered for the block (the tests' fixtures, each at its own scope)."""
    register(threshold_lever)
    try:
        yield
    finally:
        unregister()
