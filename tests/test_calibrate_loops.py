"""Calibration of single-step neurons in a custom time loop: one recorded pass per group of layers, whatever
the depth, with the same scales as a pass per layer and every rate checked by an independent forward pass."""

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.calibration import calibrate
from conftest import counted_rates

import user_neuron


def _snntorch_leaky():
    import snntorch as snn

    return snn.Leaky(beta=0.9)  # init_hidden=False: the loop carries mem


def _spikingjelly_lif():
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode(tau=2.0, step_mode="s")


def _user_lif():
    return user_neuron.MyLIF(decay=0.8)


class Loop(nn.Module):
    """``depth`` Linear -> single-step neuron layers, run over the T steps of ``x`` ([T, B, width]) by hand.
    ``copy=True`` feeds each Linear a copy of the spikes (``spikes * 1``): the same numbers, but not the
    previous layer's own output, so calibration records a pass per layer (the path before the shortcut)."""

    def __init__(self, make, depth, width, copy=False):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.neurons = nn.ModuleList(make() for _ in range(depth))
        self.copy = copy

    def forward(self, x):
        for neuron in self.neurons:
            if hasattr(neuron, "reset"):
                neuron.reset()  # SpikingJelly keeps its state in the module
        if hasattr(self.neurons[0], "u"):
            for neuron in self.neurons:
                neuron.u = torch.zeros(())
        mems = [neuron.reset_mem() if hasattr(neuron, "reset_mem") else None for neuron in self.neurons]
        out = []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                z = layer(h * 1 if self.copy else h)
                if mems[i] is not None:
                    h, mems[i] = neuron(z, mems[i])
                else:
                    h = neuron(z)
            out.append(h)
        return torch.stack(out)


def _net(kind, depth, copy=False, seed=0):
    torch.manual_seed(seed)
    return Loop({"snntorch": _snntorch_leaky, "spikingjelly": _spikingjelly_lif, "user": _user_lif}[kind], depth,
                48, copy)


def _calibrated(net, x, target):
    calls = [0]
    handle = net.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    try:
        report = calibrate(net, x, target, tolerance=0.05)
    finally:
        handle.remove()
    return report, calls[0]


KINDS = [pytest.param("snntorch", marks=pytest.mark.snntorch),
         pytest.param("spikingjelly", marks=pytest.mark.spikingjelly), "user"]


@pytest.fixture
def registered_user_neuron():
    user_neuron.register()
    yield
    user_neuron.unregister()


@pytest.mark.parametrize("kind", KINDS)
def test_a_deeper_loop_costs_no_more_passes_and_every_rate_is_real(kind, registered_user_neuron):
    x = (torch.rand(4, 16, 48, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    counts = {}
    for depth in (4, 12):
        net = _net(kind, depth)
        sip.initialize(net, "kaiming_normal", x[0])  # a start that falls silent with depth
        report, counts[depth] = _calibrated(net, x, 0.12)
        assert report.mode == "model" and report.ok, str(report)
        rates = counted_rates(list(net.neurons), lambda: net(x))
        assert all(abs(r / 0.12 - 1) <= 0.05 + 1e-9 for r in rates), rates
    # the plan's traced pass, one recorded pass, one checking pass: not one recorded pass per layer
    assert counts[12] == counts[4] <= 3, counts


@pytest.mark.parametrize("kind", KINDS)
def test_the_shortcut_finds_the_scales_a_pass_per_layer_finds(kind, registered_user_neuron):
    x = (torch.rand(3, 16, 48, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    fast, slow = _net(kind, 6), _net(kind, 6, copy=True)
    slow.load_state_dict(fast.state_dict())
    (by_shortcut, fast_calls), (by_pass, slow_calls) = _calibrated(fast, x, 0.15), _calibrated(slow, x, 0.15)
    assert slow_calls >= 6 + 1 > fast_calls  # the copy breaks the shortcut: a recorded pass per layer
    assert [r.scale for r in by_shortcut.layers] == pytest.approx([r.scale for r in by_pass.layers], rel=1e-5)
    assert by_shortcut.ok and by_pass.ok


class GainLIF(nn.Module):
    """A neuron whose drive is multiplied by a gain the loop sets from the previous layer's weight before each
    call: its input depends on the layers before it through more than its arguments, so re-running the
    previous layer's module alone does not reproduce what the model feeds it."""

    def __init__(self):
        super().__init__()
        self.gain, self.u = 1.0, torch.zeros(())

    def forward(self, x):
        self.u = 0.8 * self.u + self.gain * x
        spikes = (self.u > 1.0).float()
        self.u = self.u - spikes
        return spikes


class GainLoop(nn.Module):
    def __init__(self, depth, width):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.neurons = nn.ModuleList(GainLIF() for _ in range(depth))

    def forward(self, x):
        for neuron in self.neurons:
            neuron.u = torch.zeros(())
        for t in range(x.shape[0]):
            h, gain = x[t], 1.0
            for layer, neuron in zip(self.layers, self.neurons):
                neuron.gain = gain
                h = neuron(layer(h))
                gain = 10 * float(layer.weight.abs().mean())
        return h


def test_a_shortcut_the_real_pass_contradicts_is_redone_a_pass_per_layer():
    sip.register_neuron(GainLIF, lambda m: sip.NeuronSpec(threshold=1.0, beta=0.8, surrogate=lambda v: torch.sigmoid(4 * v)))
    try:
        torch.manual_seed(0)
        net = GainLoop(4, 48)
        x = (torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(3)) < 0.3).float()
        with torch.no_grad():
            for layer in net.layers:
                layer.weight.mul_(4.0)  # busy: the gains the first recording sees are several times the final ones
        report, calls = _calibrated(net, x, 0.15)
        assert report.ok, str(report)
        rates = counted_rates(list(net.neurons), lambda: net(x))
        assert all(abs(r / 0.15 - 1) <= 0.05 + 1e-9 for r in rates), rates
        assert calls > 3  # the checking pass found a layer off and the layers from there were recalibrated
    finally:
        sip.unregister_neuron(GainLIF)


class _Residual(nn.Module):
    """Conv -> BatchNorm, plus the block's input (``out += identity``, in place, as Spiking ResNet does), into a
    multi-step LIF; ``doubled=True`` adds the BatchNorm's own output instead, a term that moves with the scale."""

    def __init__(self, channels, doubled=False):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron

        self.conv, self.bn = layer.Conv2d(channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels)
        self.lif, self.doubled = neuron.LIFNode(tau=2.0), doubled

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += out.clone() if self.doubled else x
        return self.lif(out)


def _residual_net(blocks, doubled=False):
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.LIFNode(tau=2.0),
                        *[_Residual(8, doubled) for _ in range(blocks)])
    functional.set_step_mode(net, "m")
    return net


@pytest.mark.spikingjelly
@pytest.mark.parametrize("doubled", [False, True])
def test_residual_sums_are_searched_in_one_pass_and_checked_by_a_real_one(doubled):
    x = torch.rand(3, 8, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    calls = {}
    for blocks in (2, 6):
        net = _residual_net(blocks, doubled)
        report, calls[blocks] = _calibrated(net, x, 0.05)  # far from the rates at scale 1
        assert report.ok, str(report)
        _assert_lif_rates(net, x, 0.05)
    if doubled:  # the term moves with the scale: the check finds it, and each block is redone with stopped passes
        assert calls[6] >= calls[2] + 4 * 3
    else:  # the plan's pass, the paused pass and the checking pass, however many blocks
        assert calls[6] == calls[2] <= 3, calls


def _assert_lif_rates(net: nn.Module, x: torch.Tensor, target: float) -> None:
    """Every SpikingJelly LIF of ``net`` fires within ±5% of ``target`` on ``x`` (counted by our own hooks on a
    pass from rest)."""
    from spikingjelly.activation_based import functional, neuron

    def run():
        functional.reset_net(net)
        net(x)

    rates = counted_rates([m for m in net.modules() if isinstance(m, neuron.LIFNode)], run)
    assert all(abs(r / target - 1) <= 0.05 + 1e-9 for r in rates), rates


class _Squared(nn.Module):
    def forward(self, x):
        return x * x


@pytest.mark.spikingjelly
def test_an_input_not_affine_in_the_scale_is_caught_and_searched_by_passes():
    """BatchNorm -> x² -> LIF: the input has the module's layout, so the paused pass first takes it as a sum;
    the checking pass finds the rate off, and the strict redo finds it is not on a line and runs the model."""
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.LIFNode(tau=2.0),
                        layer.Conv2d(8, 8, 3, padding=1), layer.BatchNorm2d(8), _Squared(), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    x = torch.rand(3, 8, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    report, calls = _calibrated(net, x, 0.05)
    assert report.ok, str(report)
    _assert_lif_rates(net, x, 0.05)
    assert calls > 3 + 3  # the assumed pass, its check, the stopped passes and the whole-model evaluations
