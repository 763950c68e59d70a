"""Calibrated init: the measured rate of every layer hits its target, checked by an independent forward pass."""

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.calibration import calibrate
from conftest import counted_rates

pytestmark = []


@pytest.mark.snntorch
@pytest.mark.parametrize("beta,steps,target", [(0.9, 8, 0.1), (0.5, 1, 0.2), (1.0, 4, 0.05)])
def test_snntorch_chain_hits_target_at_every_layer(beta, steps, target):
    import snntorch as snn
    from snntorch import utils

    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(128, 128), snn.Leaky(beta=beta, init_hidden=True))])
    x = (torch.rand(32, 128) < 0.3).float()
    sip.initialize(net, "kaiming_normal", x)  # a start that falls silent with depth
    report = calibrate(net, x, target, steps=steps, tolerance=0.05)
    assert report.mode == "chain" and report.ok, str(report)

    def run():
        utils.reset(net)
        for _ in range(steps):
            net(x)

    rates = counted_rates([m for m in net.modules() if isinstance(m, snn.Leaky)], run)
    assert len(rates) == 12
    assert all(abs(r / target - 1) <= 0.05 + 1e-9 for r in rates), rates


@pytest.mark.snntorch
def test_model_mode_custom_time_loop_and_initialize_calibrated():
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(100, 200), snn.Leaky(beta=0.8)
            self.fc2, self.lif2 = nn.Linear(200, 50), snn.Leaky(beta=0.8)

        def forward(self, x):
            m1, m2 = self.lif1.reset_mem(), self.lif2.reset_mem()
            for t in range(x.shape[0]):
                s1, m1 = self.lif1(self.fc1(x[t]), m1)
                s2, m2 = self.lif2(self.fc2(s1), m2)
            return s2

    torch.manual_seed(1)
    net = Net()
    x = (torch.rand(6, 16, 100) < 0.2).float()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = sip.initialize(net, "calibrated", x, target_rate={"lif1": 0.1, "lif2": 0.05}, generator=torch.Generator().manual_seed(0))
    assert report.calibration.mode == "model" and report.calibration.ok
    rates = counted_rates([m for m in net.modules() if isinstance(m, snn.Leaky)], lambda: net(x))
    assert rates[0] == pytest.approx(0.1, rel=0.05) and rates[1] == pytest.approx(0.05, rel=0.05)
    assert torch.equal(net.fc1.bias, before["fc1.bias"])  # only weights are scaled
    # deterministic: the same start and batch give the same weights
    twin = Net()
    twin.load_state_dict(before)
    sip.initialize(twin, "calibrated", x, target_rate={"lif1": 0.1, "lif2": 0.05}, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))


@pytest.mark.spikingjelly
@pytest.mark.parametrize("train", [True, False])
def test_spikingjelly_batchnorm_is_calibrated_instead_of_the_conv(train):
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
        neuron.IFNode(step_mode="m"),
        layer.SeqToANNContainer(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 8 * 8, 64)),
        neuron.LIFNode(tau=2.0, step_mode="m"),
    )
    net.train(train)
    x = torch.rand(4, 8, 1, 16, 16)
    bn_stats = net[0][1].running_mean.clone()
    report = calibrate(net, x, 0.15)
    assert report.ok, str(report)
    assert report.layers[0].parameters == ["0.1.weight"] and report.layers[1].parameters == ["2.3.weight"]
    assert torch.equal(net[0][1].running_mean, bn_stats)  # statistics restored
    functional.reset_net(net)

    def run():
        with torch.random.fork_rng():
            torch.manual_seed(0)  # calibration evaluates dropout with seed 0
            functional.reset_net(net)
            net(x)

    rates = counted_rates([m for m in net.modules() if isinstance(m, (neuron.IFNode, neuron.LIFNode))], run)
    assert rates == pytest.approx([0.15, 0.15], rel=0.05)


def test_unreachable_target_is_reported_honestly():
    class Step(nn.Module):
        def forward(self, x):
            return (x > 1.0).float()

    sip.register_neuron(Step, lambda m: sip.NeuronSpec(threshold=1.0, surrogate=lambda v: torch.sigmoid(4 * v)))
    try:
        net = nn.Sequential(nn.Linear(10, 10, bias=False), Step(), nn.Linear(10, 10, bias=False), Step())
        x = torch.zeros(8, 10)  # silent input: no weight scale can make the first layer fire
        before = [p.clone() for p in net.parameters()]
        report = calibrate(net, x, 0.2)
        assert not report.ok and report.layers[0].status.startswith("unreachable")
        assert "silent" in report.layers[0].status
        with pytest.raises(sip.InitError, match="target rate"):
            calibrate(net, torch.rand(8, 10), 1.5)
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    finally:
        sip.unregister_neuron(Step)


@pytest.mark.snntorch
def test_default_method_is_calibrated_and_asks_for_data():
    import snntorch as snn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(40, 64), snn.Leaky(beta=0.9, init_hidden=True),
                             nn.Linear(64, 64), snn.Leaky(beta=0.9, init_hidden=True))

    x = torch.rand(32, 40, generator=torch.Generator().manual_seed(1))
    by_default, explicit = make(), make()
    sip.initialize(by_default, example_input=x, generator=torch.Generator().manual_seed(2))
    # a 2-layer plain chain: calibrated with the recipe's relay and membrane (snn_initplug.recipes)
    sip.initialize(explicit, "calibrated", x, relay=0.9, membrane=0.5, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(by_default.parameters(), explicit.parameters()))
    rates = counted_rates([m for m in by_default.modules() if isinstance(m, snn.Leaky)], lambda: by_default(x))
    assert all(abs(r / 0.1587 - 1) < 0.05 for r in rates), rates  # the default target, 1 - Phi(1)
    untouched = make()
    before = [p.detach().clone() for p in untouched.parameters()]
    with pytest.raises(sip.SnnInitError, match="needs example_input.*'ikun'"):
        sip.initialize(untouched)
    assert all(torch.equal(a, b) for a, b in zip(before, untouched.parameters()))


@pytest.mark.snntorch
def test_neurons_no_weight_feeds_are_named_not_passed_over():
    """A spiking encoder on the raw input has no weight to scale: the report says so instead of listing only the
    calibrated neurons as if that were all of them."""
    import snntorch as snn

    torch.manual_seed(0)
    net = nn.Sequential(snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(64, 32), snn.Leaky(beta=0.9, init_hidden=True))
    x = torch.rand(16, 64) * 3
    report = calibrate(net, x, 0.1, steps=4)
    assert [layer.neuron for layer in report.layers] == ["2"] and report.ok
    assert any("no weight layer before them" in note and note.endswith(": 0") for note in report.notes), report.notes
