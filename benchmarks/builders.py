"""The models the benchmarks measure, built in one place (each script picks its inputs and wrappers).

SpikingJelly's zoo models are built in multi-step mode; the frameworks are imported inside each builder, so a
script runs with whichever framework is installed. Building draws the modules' own default weights from torch's
global generator: a script that seeds before building gets the same model every time.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))


# ----------------------------------------------------------------------------------------------------------
# SpikingJelly's zoo and shipped models
# ----------------------------------------------------------------------------------------------------------
def sew_resnet18(**neuron_options) -> nn.Module:
    """SpikingJelly's zoo SEW ResNet-18 (``LIFNode``, ADD connections, 10 classes), multi-step: [T, B, 3, H, W]."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet

    model = sew_resnet.sew_resnet18(spiking_neuron=neuron.LIFNode, cnf="ADD", num_classes=10, **neuron_options)
    functional.set_step_mode(model, "m")
    return model


def spiking_resnet18_nobn() -> nn.Module:
    """The zoo's Spiking ResNet-18 (``LIFNode``) with every BatchNorm replaced by the identity, multi-step."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_resnet

    model = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode, num_classes=10,
                                            norm_layer=lambda channels: nn.Identity())
    functional.set_step_mode(model, "m")
    return model


def spiking_vgg11_bn() -> nn.Module:
    """The zoo's Spiking VGG-11 with BatchNorm (``LIFNode``, 10 classes), multi-step: [T, B, 3, H, W]."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_vgg

    model = spiking_vgg.spiking_vgg11_bn(spiking_neuron=neuron.LIFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    return model


def spikformer() -> nn.Module:
    """SpikingJelly 2.x's shipped Spikformer scaled down: T = 2, 28 x 28 x 1, patch 4, 64 dims, 4 heads, 2 blocks;
    its output is [T, B, 10]."""
    from spikingjelly.activation_based.model.spikformer import Spikformer

    return Spikformer(T=2, in_channels=1, img_size_h=28, img_size_w=28, patch_size=4, num_classes=10,
                      embed_dims=64, num_heads=4, mlp_ratio=4.0, depths=2)


def csnn(T: int = 4, channels: int = 16, backend_kwargs: Optional[dict] = None) -> nn.Module:
    """IKUN's CSNN (``examples/spikingjelly_fmnist_csnn.py``): [B, 1, 28, 28] images -> output rates [B, 10]."""
    from spikingjelly_fmnist_csnn import CSNN

    return CSNN(T=T, channels=channels, backend_kwargs=backend_kwargs)


VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11NoNorm(nn.Module):
    """VGG-11 without normalization, as SpikeInit trains it: eight 3 x 3 convolutions (64, M, 128, M, 256, 256, M,
    512, 512, M, 512, 512, M; "M" a 2 x 2 max-pool), each followed by a spiking neuron, then a non-spiking linear
    readout of the last spikes averaged over T steps. The image is presented at every step (direct coding):
    [B, C, 32, 32] -> class scores [B, 10]. ``neuron`` makes one multi-step neuron per call."""

    def __init__(self, neuron: Callable[[], nn.Module], in_channels: int = 1, num_classes: int = 10, T: int = 4,
                 width: float = 1.0):
        super().__init__()
        from spikingjelly.activation_based import functional, layer

        modules, channels = [], in_channels
        for item in VGG11_LAYERS:
            if item == "M":
                modules.append(layer.MaxPool2d(2, 2))
            else:
                out = max(1, int(item * width))
                modules += [layer.Conv2d(channels, out, kernel_size=3, padding=1), neuron()]
                channels = out
        self.features = nn.Sequential(*modules, layer.Flatten())
        self.readout = layer.Linear(channels, num_classes)
        self.T = T
        functional.set_step_mode(self, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unsqueeze(0).repeat(self.T, *([1] * x.dim()))
        return self.readout(self.features(x_seq)).mean(0)


def spikeinit_lif(tau: float = 2.0, threshold: float = 0.5, backend_kwargs: Optional[dict] = None):
    """SpikeInit's neuron: SpikingJelly ``LIFNode(tau, decay_input=True, v_threshold, v_reset=0)`` (hard reset),
    ATan surrogate, multi-step; ``backend_kwargs`` e.g. ``{"backend": "cupy"}`` on 0.0.0.0.14."""
    from spikingjelly.activation_based import neuron, surrogate

    def make() -> nn.Module:
        return neuron.LIFNode(tau=tau, decay_input=True, v_threshold=threshold, v_reset=0.0,
                              surrogate_function=surrogate.ATan(), step_mode="m", **(backend_kwargs or {}))

    return make


def vgg11_no_norm(T: int = 4, in_channels: int = 1, width: float = 1.0,
                  backend_kwargs: Optional[dict] = None) -> VGG11NoNorm:
    """SpikeInit's VGG-11 protocol network: :class:`VGG11NoNorm` of LIF τ = 2, θ = 0.5, hard reset to 0, T = 4."""
    return VGG11NoNorm(spikeinit_lif(backend_kwargs=backend_kwargs), in_channels=in_channels, T=T, width=width)


# ----------------------------------------------------------------------------------------------------------
# wrappers: the zoo's multi-step models fed with images
# ----------------------------------------------------------------------------------------------------------
def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """[B, 1, 28, 28] -> [B, 3, 32, 32], the zoo's ImageNet-shaped models' input."""
    return nn.functional.interpolate(images, size=32).repeat(1, 3, 1, 1)


class TimeMajor(nn.Module):
    """A zoo model in multi-step mode: [B, C, H, W] images -> the class scores averaged over T steps."""

    def __init__(self, model: nn.Module, T: int):
        super().__init__()
        self.model, self.T = model, T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_rgb32(images)
        return self.model(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(0)


class MeanOverT(nn.Module):
    """A model whose output is [T, B, classes] -> the mean over T."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).mean(0)


# ----------------------------------------------------------------------------------------------------------
# snnTorch
# ----------------------------------------------------------------------------------------------------------
class RecurrentNet(nn.Module):
    """784 -> 256 ``RLeaky`` (all-to-all recurrence) -> 10 ``Leaky``; input [T, B, 784] -> output spikes [T, B, 10]."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(784, 256)
        self.rlif = snn.RLeaky(beta=0.9, linear_features=256)
        self.fc2 = nn.Linear(256, 10)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk, mem = self.rlif.init_rleaky()
        mem2 = self.lif2.init_leaky()
        out = []
        for step in range(x.size(0)):
            spk, mem = self.rlif(self.fc1(x[step]), spk, mem)
            spk2, mem2 = self.lif2(self.fc2(spk), mem2)
            out.append(spk2)
        return torch.stack(out)


class PlainSNN(nn.Module):
    """``depth`` weight layers, each followed by an ``snn.Leaky``; a linear readout of the last layer's spikes
    averaged over ``steps`` steps of the same input. No normalization, no skip connection.

    ``arch="mlp"``: 784 -> ``width`` x depth ``Linear`` layers, the main job's network
    (``examples/deep_snntorch_mnist.py``'s ``DeepLIF``, the same weights for the same seed); ``arch="conv"``:
    depth 3 x 3 ``Conv2d`` of ``channels`` channels ("same" padding; a 2 x 2 max-pool after the first and the
    second layer). ``alpha``: an ATan surrogate of that sharpness (None: snnTorch's default)."""

    def __init__(self, arch: str, depth: int, width: int, channels: int, beta: float, steps: int,
                 alpha: Optional[float] = None):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        if arch == "mlp":
            sizes = [784] + [width] * depth
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            features = width
        else:
            sizes = [1] + [channels] * depth
            self.layers = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(sizes[:-1], sizes[1:]))
            side = 28 // (2 ** min(depth, 2))
            features = channels * side * side
        self.arch = arch
        extra = {} if alpha is None else {"spike_grad": surrogate.atan(alpha=alpha)}
        self.neurons = nn.ModuleList(snn.Leaky(beta=beta, **extra) for _ in range(depth))
        self.readout = nn.Linear(features, 10)
        self.steps = steps

    def last_layer_spikes(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The last neuron layer's spikes at each of the ``steps`` steps."""
        x = x.flatten(1) if self.arch == "mlp" else x.reshape(len(x), 1, 28, 28)
        mems = [neuron.reset_mem() for neuron in self.neurons]
        for _ in range(self.steps):
            h = x
            for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                h, mems[i] = neuron(layer(h), mems[i])
                if self.arch == "conv" and i < 2:
                    h = F.max_pool2d(h, 2)
            yield h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0
        for h in self.last_layer_spikes(x):
            total = total + self.readout(h)
        return total / self.steps


class CentredLinear(nn.Linear):
    """``W (s - r) + b'`` with ``b' = b + W r 1``: the same function as ``layer`` when built, but the weight
    gradient is ``δ (s - r)``, of both signs, where on spikes (never negative) it is ``δ s``, one sign per neuron,
    which Adam turns into all of a neuron's weights moving together (docs/depth.md, the 50-layer collapse)."""

    def __init__(self, layer: nn.Linear, rate: float):
        super().__init__(layer.in_features, layer.out_features, device=layer.weight.device)
        self.weight, self.rate = layer.weight, rate  # the same Parameter: a Linear to the package's walk
        self.bias = nn.Parameter((layer.bias + layer.weight.sum(1) * rate).detach())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h - self.rate, self.weight, self.bias)


def deep_mlp(depth: int = 20, width: int = 256, beta: float = 0.9, steps: int = 4) -> PlainSNN:
    """The main job's 20-layer MLP (``examples/deep_snntorch_mnist.py``'s ``DeepLIF``, the same weights for the
    same seed and the same forward pass)."""
    return PlainSNN("mlp", depth, width, channels=0, beta=beta, steps=steps)


class ImageEveryStep(nn.Module):
    """A model that reads [T, B, features] and returns spikes [T, B, classes], fed with images: [B, 1, 28, 28] ->
    the flattened image at each of T steps (direct coding) -> the output spikes summed over the steps, the class
    scores (snnTorch's spike-count readout)."""

    def __init__(self, model: nn.Module, T: int):
        super().__init__()
        self.model, self.T = model, T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        return self.model(x.unsqueeze(0).expand(self.T, *x.shape)).sum(0)
