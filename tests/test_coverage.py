"""Neurons and structures of the models people train today, each on the real framework module: snnTorch
RLeaky/RSynaptic with a one-to-one recurrent gain, weight-less neurons, identity residuals, BatchNorm after the
layer, unreachable targets, single-step models without ``steps=``. Rates are counted by our own hooks over the
framework's own forward pass."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snn_initplug as sip
from conftest import counted_rate, counted_rates



# ------------------------------------------------------------------------------------------------
# snnTorch RLeaky / RSynaptic with all_to_all=False: the gain V is one value (or one per neuron)
# ------------------------------------------------------------------------------------------------
class _OneToOneLoop(nn.Module):
    """The tutorial loop with a one-to-one recurrent neuron (learn_recurrent=True makes V a Parameter)."""

    def __init__(self, neuron):
        super().__init__()
        self.fc = nn.Linear(40, 64)
        self.lif = neuron

    def forward(self, x):
        state = self.lif.init_rsynaptic() if hasattr(self.lif, "init_rsynaptic") else self.lif.init_rleaky()
        out = []
        for t in range(x.shape[0]):
            spk, *state = self.lif(self.fc(x[t]), *state)
            out.append(spk)
        return torch.stack(out)


@pytest.mark.snntorch
@pytest.mark.parametrize("kind", ["RLeaky", "RSynaptic"])
def test_one_to_one_recurrent_gain_is_planned_initialized_and_diagnosed(kind):
    import snntorch as snn

    torch.manual_seed(0)
    neuron = (snn.RLeaky(beta=0.9, all_to_all=False, V=0.5) if kind == "RLeaky"
              else snn.RSynaptic(alpha=0.5, beta=0.9, all_to_all=False, V=torch.full((64,), 0.5)))
    net = _OneToOneLoop(neuron)
    x = (torch.rand(8, 16, 40) < 0.3).float()
    v_before = net.lif.V.detach().clone()
    p = sip.plan(net, x)
    assert [layer.name for layer in p.layers] == ["fc.weight"]
    assert any("lif.V" in note and "one-to-one" in note for note in p.notes), p.notes
    sip.initialize(net, "ikun", x)
    # bias="zero": RSynaptic integrates the Linear's bias twice (×1/(1-α)(1-β) = 20), an offset above θ
    report = sip.initialize(net, "calibrated", x, target_rate=0.1, bias="zero")
    assert torch.equal(net.lif.V, v_before)  # a gain, not a weight to redraw
    assert report.calibration.ok, str(report.calibration)
    assert abs(counted_rate(net.lif, lambda: net(x)) / 0.1 - 1) <= 0.05 + 1e-9
    assert "lif" in str(sip.diagnose(net, x))


# ------------------------------------------------------------------------------------------------
# An unreachable target keeps the best scale found and names the likely cause
# ------------------------------------------------------------------------------------------------
@pytest.mark.spikingjelly
def test_unreachable_target_keeps_best_scale_and_names_saturation():
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(20, 30), neuron.IFNode())
    functional.set_step_mode(net, "m")
    with torch.no_grad():  # half of the neurons get no input at all: the rate cannot pass 1/2
        net[0].weight[:15] = 0
        net[0].bias.zero_()
    x = (torch.rand(4, 16, 20) < 0.3).float()
    before = net[0].weight.detach().clone()
    (layer_report,) = sip.calibrate(net, x, 0.8).layers
    assert layer_report.status.startswith("unreachable") and "saturation" in layer_report.status
    assert layer_report.scale > 1 and layer_report.evaluations < 30  # stops once the rate stops moving
    torch.testing.assert_close(net[0].weight, before * layer_report.scale)
    functional.reset_net(net)
    rate = counted_rate(net[1], lambda: net(x))
    assert rate == pytest.approx(layer_report.rate) and 0.1 < rate <= 0.5


@pytest.mark.spikingjelly
def test_batchnorm_gamma_zero_is_named_as_the_cause():
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), neuron.IFNode(), layer.Conv2d(8, 8, 3, padding=1),
                        layer.BatchNorm2d(8), neuron.IFNode())
    functional.set_step_mode(net, "m")
    nn.init.zeros_(net[3].weight)  # what zero_init_residual=True does to a block's last BatchNorm
    x = (torch.rand(4, 8, 1, 6, 6) < 0.3).float()
    first, second = sip.calibrate(net, x, 0.1).layers
    assert first.status == "ok"
    assert second.status.startswith("unreachable") and "3.weight is all zero (BatchNorm γ = 0" in second.status
    assert second.evaluations < 30


# ------------------------------------------------------------------------------------------------
# Single-step models get T from steps= or a clear warning
# ------------------------------------------------------------------------------------------------
@pytest.mark.snntorch
def test_single_step_model_without_steps_warns_and_steps_calibrates_all_of_them():
    import snntorch as snn
    from snntorch import utils

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 64), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(64, 32), snn.Leaky(beta=0.9, init_hidden=True))
    x = (torch.rand(16, 40) < 0.3).float()
    with pytest.warns(UserWarning, match="one time step.*steps=T"):
        report = sip.calibrate(net, x, 0.159)
    assert any("one time step" in note for note in report.notes)

    steps = 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sip.calibrate(net, x, 0.159, steps=steps)

    def run():
        utils.reset(net)
        for _ in range(steps):
            net(x)

    for neuron in (net[1], net[3]):  # over all 20 steps, as the model runs
        assert abs(counted_rate(neuron, run) / 0.159 - 1) <= 0.05 + 1e-9


@pytest.mark.snntorch
def test_custom_time_loop_is_not_warned_about():
    import snntorch as snn

    torch.manual_seed(0)
    net = _OneToOneLoop(snn.RLeaky(beta=0.9, all_to_all=False, V=0.5))
    x = (torch.rand(8, 16, 40) < 0.3).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = sip.calibrate(net, x, 0.1, bias="zero")
    assert not any("one time step" in note for note in report.notes)


# ------------------------------------------------------------------------------------------------
# Identity residual spikes: no relay, and spike_aware leaves room for their mean and variance
# ------------------------------------------------------------------------------------------------
class _IdentityResidual(nn.Module):
    """lif1(fc1(s0) + s0), then a plain lif2(fc2(s1)): SpikingJelly multi-step LIF (τ = 5: c = 0.2)."""

    def __init__(self, width=256):
        from spikingjelly.activation_based import layer, neuron

        super().__init__()
        self.fc0, self.lif0 = layer.Linear(100, width, bias=False), neuron.LIFNode(tau=5.0, step_mode="m")
        self.fc1, self.lif1 = layer.Linear(width, width, bias=False), neuron.LIFNode(tau=5.0, step_mode="m")
        self.fc2, self.lif2 = layer.Linear(width, width, bias=False), neuron.LIFNode(tau=5.0, step_mode="m")

    def forward(self, x):
        s0 = self.lif0(self.fc0(x))
        s1 = self.lif1(self.fc1(s0) + s0)
        return self.lif2(self.fc2(s1))


@pytest.mark.spikingjelly
def test_identity_residual_gets_no_relay_and_spike_aware_accounts_for_it():
    from scipy.stats import norm
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    net = _IdentityResidual()
    x = (torch.rand(8, 64, 100) < 0.3).float()
    relayed = sip.initialize(net, "spike_aware", x, relay=0.9)
    by_layer = {row.layer: row for row in relayed.layers}
    assert by_layer["fc1.weight"].relay == 0 and "identity residual" in " ".join(by_layer["fc1.weight"].notes)
    assert by_layer["fc2.weight"].relay > 0  # its neuron's whole input is fc2

    report = sip.initialize(net, "spike_aware", x)
    q, c, theta, fan_in = 1 - norm.cdf(1.0), 0.2, 1.0, 256  # lif0 at its own target; one-step kernel K[0] = c
    sigma_u = theta - q * c  # the identity's mean q·c moves the membrane toward θ
    closed_form = math.sqrt((sigma_u**2 - q * (1 - q) * c**2) / (fan_in * q * c**2))
    assert {row.layer: row for row in report.layers}["fc1.weight"].std == pytest.approx(closed_form, rel=1e-3)
    functional.reset_net(net)
    assert abs(counted_rate(net.lif1, lambda: net(x)) / q - 1) <= 0.1


@pytest.mark.spikingjelly
@pytest.mark.parametrize("method", ["ikun", "spike_aware", "fluctuation", "kaiming_normal"])
def test_batchnorm_after_the_layer_is_noted_for_every_analytic_method(method):
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4), neuron.IFNode(),
                        layer.Flatten(), layer.Linear(4 * 8 * 8, 10), neuron.IFNode())
    functional.set_step_mode(net, "m")
    x = torch.rand(2, 4, 1, 8, 8)
    options = {"steps": 4} if method == "fluctuation" else {}  # IF: no leak, the kernel sums need T
    notes = {row.layer: " ".join(row.notes) for row in sip.initialize(net, method, x, **options).layers}
    assert "BatchNorm 1 follows" in notes["0.weight"] and "does not change the rate" in notes["0.weight"]
    assert "BatchNorm" not in notes["4.weight"]


# ------------------------------------------------------------------------------------------------
# Weight-less neurons (Spikformer's attention LIF, fed by q·kᵀ·v of spikes) are reported, not "ok"
# ------------------------------------------------------------------------------------------------
@pytest.mark.spikingjelly
def test_spikformer_attention_lif_is_reported_as_not_calibrated():
    pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(0)
    model = Spikformer(T=2, in_channels=1, img_size_h=16, img_size_w=16, patch_size=4, num_classes=10,
                       embed_dims=32, num_heads=2, mlp_ratio=2.0, depths=1)
    x = torch.rand(4, 1, 16, 16)
    report = sip.calibrate(model, x, 0.159)
    by_neuron = {row.neuron: row for row in report.layers}
    attn = by_neuron["blocks.0.attn.attn_lif"]
    assert attn.status.startswith("not calibrated") and "blocks.0.attn.qkv_lif" in attn.status
    assert attn.parameters == [] and not report.ok
    assert all(row.status == "ok" for name, row in by_neuron.items() if name != "blocks.0.attn.attn_lif")
    functional.reset_net(model)
    assert counted_rate(model.blocks[0].attn.attn_lif, lambda: model(x)) == pytest.approx(attn.rate)
    # the others, paused in the pass or (a pooling between BatchNorm and neuron) searched up to the neuron
    modules = dict(model.named_modules())
    names = [name for name in by_neuron if name != "blocks.0.attn.attn_lif"]
    functional.reset_net(model)
    rates = counted_rates([modules[name] for name in names], lambda: model(x))
    assert all(abs(r / 0.159 - 1) <= 0.05 + 1e-9 for r in rates), dict(zip(names, rates))


@pytest.mark.spikingjelly
@pytest.mark.parametrize("depths", [1, 2])
def test_spikformer_attention_lif_through_its_threshold(depths, monkeypatch):
    """weightless="threshold": every attention LIF is brought to the target by its own v_threshold, or to the
    nearest level its discrete input allows (said so), the weights after it are searched again, every rate the
    report gives is the one the model produces afterwards (counted by our hooks), and an error at the write
    leaves weights and thresholds as they were."""
    pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.spikformer import Spikformer

    def build():
        torch.manual_seed(0)
        return Spikformer(T=2, in_channels=1, img_size_h=16, img_size_w=16, patch_size=4, num_classes=10,
                          embed_dims=32, num_heads=2, mlp_ratio=2.0, depths=depths)

    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    reference_report = sip.calibrate(build(), x, 0.159)
    model = build()
    report = sip.calibrate(model, x, 0.159, weightless="threshold")
    attn = [row for row in report.layers if row.neuron.endswith("attn.attn_lif")]
    assert len(attn) == depths and all(row.parameters == [f"{row.neuron}.threshold"] for row in attn)
    modules = dict(model.named_modules())
    for row in attn:
        assert modules[row.neuron].v_threshold == pytest.approx(0.5 * row.scale, rel=1e-12)  # θ was 0.5
        # q·kᵀ·v of spikes takes few distinct values, so the rate moves in jumps: the target, or the level
        # nearest it, said so
        assert abs(row.rate / 0.159 - 1) < abs(row.initial_rate / 0.159 - 1) and abs(row.rate / 0.159 - 1) <= 0.15
        assert row.status == "ok" or row.status.startswith("unreachable within the tolerance: the rate jumps")
    assert all(row.status == "ok" for row in report.layers if row not in attn), str(report)
    functional.reset_net(model)
    rates = counted_rates([modules[row.neuron] for row in report.layers], lambda: model(x))
    assert rates == pytest.approx([row.rate for row in report.layers], abs=1e-12), str(report)
    # the weights after an attention LIF were searched again for its new threshold: the same layers are scaled
    assert [r.parameters for r in report.layers if r not in attn] == [r.parameters for r in reference_report.layers
                                                                      if r.parameters]
    # an error at the commit (after the search, before the thresholds are set) leaves everything as it was
    broken = build()
    before = {k: v.clone() for k, v in broken.state_dict().items()}
    thresholds = {n: m.v_threshold for n, m in broken.named_modules() if hasattr(m, "v_threshold")}
    import snn_initplug.calibration.commit as calibration_module

    def failing_commit(*args, **kwargs):
        raise RuntimeError("the commit failed")

    monkeypatch.setattr(calibration_module, "broadcast_parameters", failing_commit)
    with pytest.raises(RuntimeError, match="the commit failed"):
        sip.calibrate(broken, x, 0.159, weightless="threshold")
    assert all(torch.equal(before[k], v) for k, v in broken.state_dict().items())
    assert thresholds == {n: m.v_threshold for n, m in broken.named_modules() if hasattr(m, "v_threshold")}


@pytest.mark.parametrize("option", ["thresholds", None, 1])
def test_weightless_option_is_checked(option):
    with pytest.raises(sip.OptionError, match="weightless must be one of"):
        sip.calibrate(nn.Sequential(nn.Linear(3, 3)), torch.rand(2, 3), weightless=option)


# ------------------------------------------------------------------------------------------------
# Multi-step models: calibrated in about one forward pass (the pass pauses at each neuron)
# ------------------------------------------------------------------------------------------------
@pytest.mark.spikingjelly
def test_sew_resnet_is_calibrated_in_one_paused_pass():
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet

    torch.manual_seed(0)
    model = sew_resnet.sew_resnet18(spiking_neuron=neuron.LIFNode, cnf="ADD", num_classes=10)
    functional.set_step_mode(model, "m")
    x = torch.rand(2, 4, 3, 32, 32)
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    report = sip.calibrate(model, x, 0.159)
    assert report.ok and len(report.layers) == 20, str(report)
    assert calls[0] == 2  # the plan's pass and the paused pass; model mode took 5-6 per layer
    neurons = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    functional.reset_net(model)
    rates = counted_rates(neurons, lambda: model(x))
    assert all(abs(r / 0.159 - 1) <= 0.05 + 1e-9 for r in rates), rates


@pytest.mark.spikingjelly
@pytest.mark.parametrize("between, calls", [("maxpool", 6), ("relu", None)])
def test_a_module_between_norm_and_neuron(between, calls):
    """Multi-step: where a module sits between BatchNorm and the neuron, the pass stops there. A max-pool keeps
    the input affine in γ's scale (checked from the input at 0 and 2): the search runs on the neuron alone, so
    the whole model is called 6 times (plan, the pass that stops, three stopped passes, the pass that resumes); a
    ReLU after a non-zero β does not, and the scale is searched by passes. Either way the rates are the real
    ones."""
    from spikingjelly.activation_based import functional, layer, neuron

    middle = {"maxpool": layer.MaxPool2d(2), "relu": layer.SeqToANNContainer(nn.ReLU())}[between]
    torch.manual_seed(0)
    model = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), layer.BatchNorm2d(8), middle, neuron.LIFNode(),
                          layer.Flatten(), layer.Linear(8 * (16 if between == "maxpool" else 64), 16),
                          neuron.LIFNode())
    with torch.no_grad():
        model[1].bias.fill_(0.5)  # ReLU(γ·x + β) with β ≠ 0 is not affine in γ's scale
    functional.set_step_mode(model, "m")
    x = torch.rand(4, 16, 1, 8, 8)
    counter = [0]
    model.register_forward_pre_hook(lambda m, a: counter.__setitem__(0, counter[0] + 1))
    report = sip.calibrate(model, x, 0.159, mode="model", tolerance=0.01)  # tight: many evaluations
    assert report.ok and len(report.layers) == 2, str(report)
    evaluations = report.layers[0].evaluations
    if calls is not None:  # however many evaluations the search took
        assert counter[0] == calls and evaluations > 3
    else:  # a stopped pass per evaluation
        assert counter[0] >= 3 + evaluations
    functional.reset_net(model)
    rates = counted_rates([model[3], model[6]], lambda: model(x))
    assert rates == pytest.approx([r.rate for r in report.layers], abs=1e-12)


@pytest.mark.snntorch
def test_tutorial_loop_is_calibrated_in_one_pass_per_neuron_layer():
    import snntorch as snn

    class Tutorial5(nn.Module):  # snnTorch tutorial 5: the state is passed in and returned at every step
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(100, 200), snn.Leaky(beta=0.95)
            self.fc2, self.lif2 = nn.Linear(200, 10), snn.Leaky(beta=0.95)

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            spikes = []
            for step in range(x.size(0)):
                spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                spikes.append(spk2)
            return torch.stack(spikes)

    torch.manual_seed(0)
    net = Tutorial5()
    x = (torch.rand(25, 32, 100) < 0.2).float()
    calls = [0]
    net.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    report = sip.calibrate(net, x, 0.159, bias="zero")
    assert report.ok, str(report)
    assert calls[0] == 3  # the plan's pass and one per neuron layer
    rates = counted_rates([net.lif1, net.lif2], lambda: net(x))
    assert all(abs(r / 0.159 - 1) <= 0.05 + 1e-9 for r in rates), rates


class _Coincidence(nn.Module):
    """Two snnTorch LIF layers, and a third fed by the product of their spikes (no weight), T steps."""

    def __init__(self, learn_threshold: bool = False):
        super().__init__()
        import snntorch as snn

        self.fc1, self.fc2 = nn.Linear(20, 40), nn.Linear(20, 40)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)
        self.both = snn.Leaky(beta=0.5, init_hidden=True, learn_threshold=learn_threshold)

    def forward(self, x):
        return [self.both(2.0 * self.lif1(self.fc1(x)) * self.lif2(self.fc2(x))) for _ in range(4)]


@pytest.mark.snntorch
@pytest.mark.parametrize("learn_threshold", [False, True])
def test_snntorch_neuron_fed_by_a_product_of_spikes_through_its_threshold(learn_threshold):
    torch.manual_seed(0)
    model = _Coincidence(learn_threshold)
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(2)) * 2
    kind = type(model.both.threshold)
    targets = {"lif*": 0.3, "both": 0.05}  # coincidences of two 0.3-rate layers: up to 0.09 per step
    report = sip.initialize(model, "calibrated", x, weightless="threshold", target_rate=targets).calibration
    both = {r.neuron: r for r in report.layers}["both"]
    assert both.parameters == ["both.threshold"] and both.status == "ok", str(report)
    assert float(model.both.threshold) == pytest.approx(both.scale, rel=1e-6)  # θ was 1
    assert type(model.both.threshold) is kind  # a learned threshold stays the optimizer's Parameter
    import snntorch.utils as utils

    utils.reset(model)
    rates = counted_rates([model.lif1, model.lif2, model.both], lambda: model(x))
    assert all(abs(r / t - 1) <= 0.05 + 1e-9 for r, t in zip(rates, [0.3, 0.3, 0.05])), rates


def test_a_user_neuron_without_a_threshold_lever_is_named():
    from user_neuron import MyLIF, register, unregister

    register()
    try:
        class Product(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1, self.fc2, self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(6, 8), MyLIF(), MyLIF(), MyLIF()

            def forward(self, x):
                return self.c(self.a(self.fc1(x)) * self.b(self.fc2(x)))

        torch.manual_seed(0)
        report = sip.calibrate(Product(), torch.rand(32, 6) * 3, 0.2, weightless="threshold")
        c = {r.neuron: r for r in report.layers}["c"]
        assert c.parameters == [] and c.status.startswith("not calibrated") and "scale_threshold" in c.status
    finally:
        unregister()


@pytest.mark.snntorch
def test_threshold_search_on_a_model_that_draws_counts_one_seeded_pass():
    """Dropout before the weight-less neuron: every evaluation of the threshold search is one pass from rest with
    the draws of ``seed=``, so its first (initial) rate is what that seeded pass gives, counted by our own hook, at the
    original threshold and the calibrated weights (the neuron is last: no later weight moves)."""
    import snntorch.utils as utils

    class Dropped(_Coincidence):
        def forward(self, x):
            return [self.both(F.dropout(2.0 * self.lif1(self.fc1(x)) * self.lif2(self.fc2(x)), 0.3, True))
                    for _ in range(4)]

    torch.manual_seed(0)
    model = Dropped()
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(2)) * 2
    rng = torch.get_rng_state()
    report = sip.calibrate(model, x, {"lif*": 0.3, "both": 0.05}, weightless="threshold", mode="model", seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left where it was
    assert any("draws random numbers" in note and "seed=5" in note for note in report.notes)
    both = {r.neuron: r for r in report.layers}["both"]
    assert both.parameters == ["both.threshold"], str(report)
    with torch.no_grad():
        model.both.threshold.fill_(1.0)  # back to the original θ, the calibrated weights in place
    utils.reset(model)
    torch.manual_seed(5)
    assert counted_rate(model.both, lambda: model(x)) == pytest.approx(both.initial_rate, abs=1e-12)
