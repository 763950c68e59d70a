"""A framework-free neuron written the way a user would, shared by the tests (and importable by the processes
the distributed tests spawn): u = decay·u + x, a hard spike with a sigmoid straight-through surrogate, subtract
reset; registered with the public API."""
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


def register():
    sip.register_neuron(MyLIF, to_spec=lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.decay,
                                                               surrogate=lambda x: torch.sigmoid(4 * x), name="MyLIF"))


def unregister():
    sip.unregister_neuron(MyLIF)
