"""The relay structure (``spike_aware`` / ``calibrated`` with ``relay=``): one strong one-to-one input per neuron
plus a weaker dense random part.

Checked against independent simulations: the relay weight's closed form by Monte Carlo, the pattern by
PyTorch's own convolutions, the rate through depth and the separation of nearby inputs by running the
frameworks' neurons (and a framework-free one) through 50 layers.
"""
import itertools
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

import snn_initplug as sip
import user_neuron
from snn_initplug import theory
from snn_initplug.init import sample
from snn_initplug import calculate_relay, relay_pattern  # the public names

TARGET = 1 - stats.norm.cdf(1.0)


# --- the closed form ------------------------------------------------------------------------------------
@pytest.mark.parametrize("theta,sigma,p", [(1.0, 0.3, 0.16), (1.0, 0.5, 0.1), (0.5, 0.2, 0.3), (2.0, 1.0, 0.05)])
def test_relay_gain_holds_the_rate_monte_carlo(theta, sigma, p):
    g = theory.relay_gain(theta, sigma, p)
    gen = torch.Generator().manual_seed(0)
    n = 4_000_000
    spikes = (torch.rand(n, generator=gen, dtype=torch.float64) < p).double()
    u = g * spikes + sigma * torch.randn(n, generator=gen, dtype=torch.float64)
    rate = (u >= theta).double().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n), (rate, p)
    assert g > theta  # the relayed spike must clear the threshold more often than not


def test_relay_gain_refuses_a_dense_part_that_fires_too_often():
    # Q(0.5) = 0.31 of the non-relayed neurons fire: more than p = 0.05 can balance
    with pytest.raises(sip.InitError, match="fires more often than the rate"):
        theory.relay_gain(1.0, 2.0, 0.05)


# --- the pattern --------------------------------------------------------------------------------------
def test_relay_pattern_is_the_identity_for_square_linear():
    assert torch.equal(relay_pattern((5, 5)), torch.eye(5))
    wide = relay_pattern((3, 7))
    assert torch.equal(wide, torch.eye(3, 7))
    tall = relay_pattern((6, 4))  # output i relays input i mod 4
    assert torch.equal(tall.argmax(1), torch.arange(6) % 4) and torch.equal(tall.sum(1), torch.ones(6))


@pytest.mark.parametrize("c_in,c_out,groups,kernel", [(3, 3, 1, 3), (3, 5, 1, 3), (4, 4, 2, 3), (4, 4, 4, 5), (2, 2, 1, 1)])
def test_relay_pattern_makes_a_same_padded_conv_copy_channels(c_in, c_out, groups, kernel):
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)
    with torch.no_grad():
        conv.weight.copy_(relay_pattern(conv.weight.shape))
    x = torch.randn(2, c_in, 6, 6, generator=torch.Generator().manual_seed(0))
    per_group_in, per_group_out = c_in // groups, c_out // groups
    source = [(i // per_group_out) * per_group_in + i % per_group_in for i in range(c_out)]
    assert torch.allclose(conv(x), x[:, source])


def test_relay_pattern_conv1d():
    w = relay_pattern((3, 3, 3))
    x = torch.randn(1, 3, 8)
    assert torch.allclose(F.conv1d(x, w, padding=1), x)


# --- the tensor function ------------------------------------------------------------------------------
def test_spike_aware_relay_tensor_law():
    """θ = σ_u = 1: the input rate is p = 1 − Φ(1), the plain variance 1/(n p); the dense part keeps 1 − ρ of it,
    and the relay weight solves p Φ((g − θ)/σ_d) + (1 − p)(1 − Φ(θ/σ_d)) = p with σ_d = dense std · √(n p)."""
    n, relay = 512, 0.9
    w = sip.spike_aware_(torch.empty(n, n), relay=relay, generator=torch.Generator().manual_seed(0))
    p = stats.norm.sf(1.0)
    dense_std = math.sqrt((1 - relay) / (n * p))
    sigma_d = dense_std * math.sqrt(n * p)
    weight = 1.0 + sigma_d * stats.norm.isf((1 - p) * stats.norm.sf(1.0 / sigma_d) / p)
    assert p * stats.norm.cdf((weight - 1.0) / sigma_d) + (1 - p) * stats.norm.sf(1.0 / sigma_d) == pytest.approx(p)
    assert calculate_relay(relay, math.sqrt(1 / (n * p)), n, 1.0, p) == pytest.approx((dense_std, weight), rel=1e-9)
    off = w[~torch.eye(n, dtype=torch.bool)]
    assert off.std().item() == pytest.approx(dense_std, rel=0.01)
    assert abs(off.mean().item()) < 4 * dense_std / math.sqrt(off.numel())
    assert abs(w.diag().mean().item() - weight) < 4 * dense_std / math.sqrt(n)


def test_relay_zero_is_the_plain_rule():
    a = sip.spike_aware_(torch.empty(64, 64), relay=0.0, generator=torch.Generator().manual_seed(3))
    b = sip.spike_aware_(torch.empty(64, 64), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- through depth, with real neurons -----------------------------------------------------------------
def make_neuron(framework):
    if framework == "snntorch":
        import snntorch as snn

        return snn.Leaky(beta=0.5, init_hidden=True)
    if framework == "spikingjelly":
        from spikingjelly.activation_based import neuron

        return neuron.LIFNode(tau=2.0)
    return user_neuron.MyLIF(decay=0.5)


FRAMEWORKS = [
    "user",
    pytest.param("snntorch", marks=pytest.mark.snntorch),
    pytest.param("spikingjelly", marks=pytest.mark.spikingjelly),
]


@pytest.fixture(autouse=True)
def user_neuron_registered():
    user_neuron.register()
    yield
    user_neuron.unregister()


def reset_states(net):
    for module in net:
        if isinstance(module, user_neuron.MyLIF):
            module.u = torch.zeros(())
        elif hasattr(module, "reset"):  # SpikingJelly
            module.reset()
        elif hasattr(module, "reset_mem"):  # snnTorch with init_hidden
            module.reset_mem()


def spikes_per_layer(net, x):
    """One pass (T = 1) from fresh states; the spikes after every neuron."""
    reset_states(net)
    out, h = [], x
    with torch.no_grad():
        for module in net:
            h = module(h)
            if not isinstance(module, nn.Linear):
                out.append(h)
    return out


def deep_stack(framework, relay, seed, depth=50, width=256):
    torch.manual_seed(seed)
    net = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), make_neuron(framework))])
    x = (torch.rand(64, width) < TARGET).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = sip.initialize(net, "spike_aware", x, relay=relay, generator=torch.Generator().manual_seed(seed))
    return net, x, report


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_relay_holds_the_rate_through_50_layers(framework):
    """Measured: with relay=0.9 every layer's rate stays within ±15% of 1 − Φ(1) at width 256 (T = 1), where the
    plain rule drifts down to about 0.07 (docs/initializers.md)."""
    for seed in range(3):
        net, x, report = deep_stack(framework, 0.9, seed)
        assert report.layers[0].relay == 0.0  # the first layer reads data, not spikes
        assert all(row.relay > 1.0 for row in report.layers[1:])
        rates = [s.mean().item() for s in spikes_per_layer(net, x)]
        assert all(abs(r / TARGET - 1) < 0.15 for r in rates), (seed, [round(r, 3) for r in rates])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_relay_keeps_nearby_inputs_apart_where_the_plain_rule_decorrelates_them(framework):
    """Two batches differing in 5% of their input spikes: the normalised distance E|s − s'| / (2p(1−p)) of the
    spikes at layer 20 (1 = unrelated patterns). Dense threshold layers are chaotic (the plain rule reaches ≈ 0.9
    by layer 5); the relay path carries the input's identity (measured ≈ 0.5 at layer 20)."""
    def distance_at_20(relay):
        net, x, _ = deep_stack(framework, relay, seed=0, depth=20)
        flips = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.05).float()
        spikes = spikes_per_layer(net, torch.cat([x, (x + flips) % 2]))[-1]  # one batch: the same fresh states
        a, b = spikes[:64], spikes[64:]
        p = spikes.mean().item()
        return (a - b).abs().mean().item() / (2 * p * (1 - p))

    plain, relayed = distance_at_20(0.0), distance_at_20(0.9)
    assert plain > 0.8, plain
    assert relayed < 0.65, relayed


def test_calibrated_relay_keeps_the_structure_and_hits_the_target():
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(128, 128), user_neuron.MyLIF(decay=0.9))])
    steps = [(torch.rand(32, 128) < 0.3).float() for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = sip.initialize(net, "calibrated", steps, relay=0.9, target_rate=0.2,
                                generator=torch.Generator().manual_seed(0))
    assert report.calibration.ok, str(report.calibration)
    for layer in list(net)[2::2]:  # the relayed layers (not the first)
        w = layer.weight.detach()
        off = w[~torch.eye(128, dtype=torch.bool)]
        assert w.diag().mean() > 10 * off.std()  # the calibration scaled, it did not redraw
    reset_states(net)
    rates = [0.0] * 12
    with torch.no_grad():
        for x in steps:
            h = x
            for i, module in enumerate(net):
                h = module(h)
                if i % 2:
                    rates[i // 2] += h.mean().item() / len(steps)
    assert all(abs(r / 0.2 - 1) <= 0.05 + 1e-9 for r in rates), rates


def test_relay_replays_bit_for_bit(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), user_neuron.MyLIF(), nn.Linear(32, 32), user_neuron.MyLIF())

    x = torch.rand(8, 16)
    first = build()
    report = sip.initialize(first, "spike_aware", x, relay=0.8, generator=torch.Generator().manual_seed(5))
    report.save(tmp_path / "r.json")
    second = build()
    sip.reinitialize(second, tmp_path / "r.json", x)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert sip.Report.load(tmp_path / "r.json").layers[1].relay == report.layers[1].relay > 0


def test_relay_gain_is_finite_for_a_tiny_dense_part():
    """1 − Φ(θ/σ_d) underflows to 0 for σ_d = 0.02 (θ/σ_d = 50). The two tails must balance, so
    (g − θ)/σ_d ≈ θ/σ_d: g tends to 2θ from below as σ_d → 0, and must be finite."""
    g = theory.relay_gain(1.0, 0.02, 0.16)
    assert math.isfinite(g) and 1.95 < g < 2.0
    # continuity with the direct formula where it does not underflow
    sigma = 0.2
    direct = 1.0 - sigma * stats.norm.ppf(0.84 * stats.norm.sf(1.0 / sigma) / 0.16)
    assert theory.relay_gain(1.0, sigma, 0.16) == pytest.approx(direct, rel=1e-12)


def test_relay_in_a_deep_plain_conv_stack():
    """The Dirac-like pattern in a model: 30 same-padded 3×3 convolutions of 16 channels (fan_in 144), T = 1.
    The first layer fires below the target (zero padding starves the border pixels: 0.12 measured); every relayed
    layer then keeps that layer's rate within ±10%, while the plain rule drifts further."""
    def rates(relay):
        torch.manual_seed(0)
        net = nn.Sequential(*[m for _ in range(30) for m in (nn.Conv2d(16, 16, 3, padding=1), user_neuron.MyLIF(0.5))])
        x = (torch.rand(16, 16, 12, 12) < TARGET).float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = sip.initialize(net, "spike_aware", x, relay=relay, generator=torch.Generator().manual_seed(0))
        assert all((row.relay > 0) == (relay > 0 and i > 0) for i, row in enumerate(report.layers))
        out, h = [], x
        for module in net:
            if isinstance(module, user_neuron.MyLIF):
                module.u = torch.zeros(())
        with torch.no_grad():
            for module in net:
                h = module(h)
                if isinstance(module, user_neuron.MyLIF):
                    out.append(h.mean().item())
        return out

    relayed, plain = rates(0.9), rates(0.0)
    assert all(abs(r / relayed[0] - 1) < 0.1 for r in relayed), [round(r, 3) for r in relayed]
    assert max(abs(r / plain[0] - 1) for r in plain) > 2 * max(abs(r / relayed[0] - 1) for r in relayed), \
        ([round(r, 3) for r in plain], [round(r, 3) for r in relayed])


def test_no_relay_where_two_weights_feed_one_neuron():
    """Two layers summed into one neuron would give it two relay paths: neither gets one, and the report says so."""
    class TwoFeeds(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.n1, self.n2 = user_neuron.MyLIF(), user_neuron.MyLIF()

        def forward(self, x):
            s = self.n1(self.a(x))
            return self.n2(self.b(s) + self.c(s))

    torch.manual_seed(0)
    report = sip.initialize(TwoFeeds(), "spike_aware", torch.rand(16, 8), relay=0.9,
                            generator=torch.Generator().manual_seed(0))
    rows = {row.layer: row for row in report.layers}
    assert set(rows) == {"a.weight", "b.weight", "c.weight"}
    assert all(row.relay == 0.0 for row in rows.values())
    assert all(any("relay: not applied" in note for note in rows[name].notes) for name in ("b.weight", "c.weight"))


def _relay_drive(gain, sigma_dense, p, n, steps, seed=123):
    """Relay spikes of probability p times the gain plus a Gaussian dense input, drawn by torch (not by the
    simulation's numpy generator), one tensor per step."""
    g = torch.Generator().manual_seed(seed)
    return [gain * (torch.rand(n, generator=g, dtype=torch.float64) < p)
            + sigma_dense * torch.randn(n, generator=g, dtype=torch.float64) for _ in range(steps)]


@pytest.mark.parametrize("sigma_dense, steps, hard", [(0.3, 4, False), (0.2, 8, False), (0.3, 4, True)])
def test_relay_weight_over_steps_holds_the_rate_in_spikingjellys_neuron(sigma_dense, steps, hard):
    """The T-step relay weight drives SpikingJelly's own LIFNode (τ = 10, no input decay: u ← 0.9 u + x, reset
    right after the spike, as the simulation assumes) at p averaged over the T steps from rest; with the soft
    reset the one-step weight of the closed form overdrives it."""
    sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    p, theta, beta, n = 0.16, 1.0, 0.9, 200_000
    ours = theory.relay_gain_over_steps(theta, sigma_dense, p, beta, steps, "hard" if hard else "subtract")

    def framework_rate(gain: float) -> float:
        cell = sj_neuron.LIFNode(tau=10.0, decay_input=False, v_threshold=theta, v_reset=0.0 if hard else None,
                                 step_mode="m")
        with torch.no_grad():
            spikes = cell(torch.stack(_relay_drive(gain, sigma_dense, p, n, steps)))
        return float(spikes.mean())

    assert framework_rate(ours) == pytest.approx(p, rel=0.02)
    if not hard:  # a soft reset keeps what the relayed spike left above θ: the one-step weight overdrives
        assert framework_rate(theory.relay_gain(theta, sigma_dense, p)) > 1.1 * p
    # one step from rest: the neuron spikes where the drive alone crosses θ, at the rate p
    one_step = theory.relay_gain_over_steps(theta, sigma_dense, p, beta, 1)
    assert float((_relay_drive(one_step, sigma_dense, p, n, 1)[0] > theta).double().mean()) == pytest.approx(p, rel=0.02)


@pytest.mark.snntorch
def test_relay_weight_over_steps_in_snntorchs_neuron_within_its_delayed_reset():
    """snnTorch's Leaky subtracts θ one step later and undecayed (u ← β u + x − θ s_prev): the same weight fires
    a few percent below p there (measured 0.154 for 0.16), far closer than the one-step weight (0.2 and more)."""
    import snntorch as snn

    p, theta, beta, n, steps, sigma_dense = 0.16, 1.0, 0.9, 200_000, 4, 0.3
    ours = theory.relay_gain_over_steps(theta, sigma_dense, p, beta, steps)

    def framework_rate(gain: float) -> float:
        neuron, fired = snn.Leaky(beta=beta, threshold=theta), 0.0
        mem = neuron.init_leaky()
        for drive in _relay_drive(gain, sigma_dense, p, n, steps):
            spk, mem = neuron(drive, mem)
            fired += float(spk.sum())
        return fired / (n * steps)

    assert framework_rate(ours) == pytest.approx(p, rel=0.06)
    assert framework_rate(theory.relay_gain(theta, sigma_dense, p)) > 1.2 * p


@pytest.mark.snntorch
def test_spike_aware_relay_over_the_horizon_does_not_overdrive_a_deep_stack():
    """A 12-layer snnTorch LIF stack (β = 0.9) run for T = 4 steps: with the one-step relay weight the rates
    climb layer after layer (the soft reset keeps what the relayed spike left above θ); with horizon=4 the relay
    weight is the T-step one and no layer fires above the one-step target 1 − Φ(1) = 0.159 by more than 25%."""
    import snntorch as snn

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(64 if i == 0 else 128, 128) for i in range(12))
            self.neurons = nn.ModuleList(snn.Leaky(beta=0.9) for _ in range(12))

        def forward(self, x):
            mems = [n.reset_mem() for n in self.neurons]
            out = []
            for _ in range(4):
                h = x
                for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                    h, mems[i] = neuron(layer(h), mems[i])
                out.append(h)
            return torch.stack(out)

    x = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    rates = {}
    for horizon in ("single", 4):
        torch.manual_seed(0)
        model = Stack()
        report = sip.initialize(model, "spike_aware", x, relay=0.9, steps=horizon,
                                generator=torch.Generator().manual_seed(0))
        assert (report.layers[5].assumed.get("relay_steps") == 4) == (horizon == 4)
        rates[horizon] = [layer.rate for layer in sip.diagnose(model, x).layers]
    assert max(rates["single"][6:]) > 0.3, rates["single"]
    assert max(rates[4][1:]) < 1.25 * 0.159, rates[4]


# --- the copy relay (relay=1) -----------------------------------------------------------------------------
def _every_train(steps: int) -> torch.Tensor:
    """All 2^T binary spike trains of T steps, one per row."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=steps)))


def _snntorch_copies(gain: float, beta: float, reset: str, trains: torch.Tensor, **options) -> bool:
    import snntorch as snn

    neuron = snn.Leaky(beta=beta, reset_mechanism=reset, **options)
    mem, out = neuron.reset_mem(), []
    with torch.no_grad():
        for t in range(trains.shape[1]):
            spk, mem = neuron(gain * trains[:, t], mem)
            out.append(spk)
    return torch.equal(torch.stack(out, 1), trains)


def _spikingjelly_copies(gain: float, beta: float, v_reset, trains: torch.Tensor) -> bool:
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    tau = 1.0 / (1.0 - beta)  # SpikingJelly's LIF: β = 1 − 1/τ, the input scaled by 1/τ
    cell = neuron.LIFNode(tau=tau, v_reset=v_reset, step_mode="m")
    with torch.no_grad():
        return torch.equal(cell((gain * tau * trains).T.contiguous()).T, trains)


@pytest.mark.snntorch
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95])
def test_copy_window_is_tight_in_snntorchs_leaky(beta):
    """Every one of the 2^6 input trains comes out unchanged of snnTorch's Leaky for a jump just inside
    ``copy_window``'s lower end, and some train does not just outside it; the hard ("zero") reset copies from
    θ on; ``copy_gain`` copies with either reset."""
    trains = _every_train(6)
    low, _ = theory.copy_window(1.0, beta, 6)
    assert _snntorch_copies(low * 1.001, beta, "subtract", trains)
    assert not _snntorch_copies(low * 0.999, beta, "subtract", trains)
    assert _snntorch_copies(theory.copy_gain(1.0, beta, 6), beta, "subtract", trains)
    hard_low, hard_high = theory.copy_window(1.0, beta, 6, "hard", 0.0)
    assert (hard_low, hard_high) == (1.0, math.inf)
    assert _snntorch_copies(1.001, beta, "zero", trains) and not _snntorch_copies(0.999, beta, "zero", trains)


@pytest.mark.spikingjelly
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95])
def test_copy_window_is_tight_in_spikingjellys_lif(beta):
    """SpikingJelly's LIFNode resets right after the spike, so a soft-reset neuron copies from θ on, and the
    window's upper end is its own (a jump above it makes a quiet step fire after a run of spikes)."""
    trains = _every_train(6)
    low, high = theory.copy_window(1.0, beta, 6)
    assert _spikingjelly_copies(low, beta, None, trains) and _spikingjelly_copies(high * 0.999, beta, None, trains)
    assert not _spikingjelly_copies(high * 1.001, beta, None, trains)
    assert _spikingjelly_copies(1.001, beta, 0.0, trains) and not _spikingjelly_copies(0.999, beta, 0.0, trains)


@pytest.mark.snntorch
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_copy_window_of_the_adapters_reset_timing_is_tight_in_snntorch(beta, reset_delay):
    """snnTorch's Leaky resets at the next step (``reset_delay=False``: right after the spike), and its adapter
    says so; the window of that timing alone is the neuron's own: every 6-step train is copied just inside
    both ends and some train is not just outside them. With ``reset_delay=False`` the upper end is on the safe
    side only: snnTorch then also skips a second reset on the step after a spike, which lets larger jumps copy."""
    import snntorch as snn

    timing = sip.adapters.neuron_spec(snn.Leaky(beta=beta, reset_delay=reset_delay)).reset_timing
    assert timing == ("next_step" if reset_delay else "after_spike")
    trains = _every_train(6)
    low, high = theory.copy_window(1.0, beta, 6, reset_timing=timing)
    copies = lambda gain: _snntorch_copies(gain, beta, "subtract", trains, reset_delay=reset_delay)  # noqa: E731
    assert copies(low * 1.001) and copies(high * 0.999)
    assert not copies(low * 0.999) and (not reset_delay or not copies(high * 1.001))


@pytest.mark.spikingjelly
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95])
def test_copy_window_of_the_adapters_reset_timing_is_tight_in_spikingjelly(beta):
    """SpikingJelly's LIFNode resets right after the spike, its adapter says so, and the window of that timing
    is the neuron's own: from θ (not the lower end under both timings) to the upper end."""
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    timing = sip.adapters.neuron_spec(neuron.LIFNode(tau=1.0 / (1.0 - beta), v_reset=None)).reset_timing
    assert timing == "after_spike"
    trains = _every_train(6)
    low, high = theory.copy_window(1.0, beta, 6, reset_timing=timing)
    assert low == 1.0 and low < theory.copy_window(1.0, beta, 6)[0]
    assert _spikingjelly_copies(low * 1.001, beta, None, trains) and _spikingjelly_copies(high * 0.999, beta, None, trains)
    assert not _spikingjelly_copies(low * 0.999, beta, None, trains)
    assert not _spikingjelly_copies(high * 1.001, beta, None, trains)


def test_a_registered_neuron_without_a_reset_timing_gets_the_window_of_both():
    """A ``NeuronSpec`` that does not say when its reset acts copies under either timing: its window is the
    intersection, and an unknown timing is refused."""
    assert sip.NeuronSpec(threshold=1.0, beta=0.9).reset_timing is None
    both = theory.copy_window(1.0, 0.9, 6)
    after, nxt = (theory.copy_window(1.0, 0.9, 6, reset_timing=t) for t in ("after_spike", "next_step"))
    assert both == (max(after[0], nxt[0]), min(after[1], nxt[1]))
    with pytest.raises(sip.NeuronSpecError, match="reset_timing must be one of"):
        sip.NeuronSpec(threshold=1.0, reset_timing="later")
    with pytest.raises(sip.InitError, match="reset_timing must be one of"):
        theory.copy_window(1.0, 0.9, 6, reset_timing="later")


@pytest.mark.parametrize("beta", [0.8, 0.9, 0.97])
def test_copy_gain_for_any_length_copies_long_trains(beta):
    """``steps=None``: the window of T → ∞, (2 − β)θ to θ/β; its jump copies every train of 12 steps in a plain
    simulation of both reset conventions, and the T-step windows shrink towards it."""
    low, high = theory.copy_window(2.0, beta)
    assert (low, high) == (pytest.approx(2.0 * (2 - beta)), pytest.approx(2.0 / beta))
    gain, trains = theory.copy_gain(2.0, beta), _every_train(12).double()
    assert low < gain < high
    for decayed_reset in (False, True):
        u, out = torch.zeros(len(trains), dtype=torch.float64), []
        fired = torch.zeros_like(u)
        for t in range(trains.shape[1]):
            u = beta * (u - 2.0 * fired) + gain * trains[:, t] if decayed_reset else \
                beta * u + gain * trains[:, t] - 2.0 * fired
            fired = (u > 2.0).double()
            out.append(fired)
        assert torch.equal(torch.stack(out, 1), trains)
    previous = theory.copy_window(2.0, beta, 2)
    for steps in (4, 8, 64):
        window = theory.copy_window(2.0, beta, steps)
        assert previous[0] <= window[0] <= low + 1e-12 and high - 1e-12 <= window[1] <= previous[1]
        previous = window


def test_copy_window_refuses_a_neuron_that_cannot_copy():
    """Without a reset every input stays: β S < 1 is needed (T = 2 works for β < 1, T = 4 not for β = 0.9)."""
    assert theory.copy_window(1.0, 0.9, 2, "none") == (1.0, pytest.approx(1 / 0.9))
    with pytest.raises(sip.InitError, match="cannot copy its input over 4 steps"):
        theory.copy_window(1.0, 0.9, 4, "none")
    with pytest.raises(sip.InitError, match="hard reset to 1.5 at or above"):
        theory.copy_window(1.0, 0.9, 4, "hard", 1.5)
    with pytest.raises(sip.InitError, match="steps must be a positive whole number"):
        theory.copy_window(1.0, 0.9, 0)
    # an integrate-and-fire neuron (β = 1) keeps g − θ per relayed spike: it copies T steps for θ < g < θ(1 + 1/(T−1))
    # but no train of any length; the error says how to get the T-step window
    assert theory.copy_window(1.0, 1.0, 4) == (pytest.approx(1.0), pytest.approx(4 / 3))
    with pytest.raises(sip.InitError, match="give steps=T"):
        theory.copy_window(1.0, 1.0)


def test_copy_relay_law_is_the_pattern_alone():
    """The tensor-level copy weight, for a neuron that scales its input by c = 0.1 (θ = 0.5, β = 0.9, T = 4), copies
    every 4-step train in a plain simulation of that neuron (both reset conventions); no dense part."""
    dense, weight = calculate_relay(1.0, dense_std=0.1, fan_in=256, threshold=0.5, input_rate=0.16,
                                    input_scale=0.1, dynamics=sip.laws.RelayDynamics(beta=0.9, steps=4))
    assert dense == 0.0
    trains = _every_train(4).double()
    for decayed_reset in (False, True):
        u, fired, out = torch.zeros(len(trains), dtype=torch.float64), torch.zeros(len(trains), dtype=torch.float64), []
        for t in range(4):
            drive = 0.1 * weight * trains[:, t]
            u = 0.9 * (u - 0.5 * fired) + drive if decayed_reset else 0.9 * u + drive - 0.5 * fired
            fired = (u > 0.5).double()
            out.append(fired)
        assert torch.equal(torch.stack(out, 1), trains)
    law = sip.laws.spike_aware_law(256, 1.0, 1.0, 0.16, relay=1.0, relay_dynamics=sip.laws.RelayDynamics(beta=0.9))
    w = sample(law, (256, 256), generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, law.relay * torch.eye(256))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_relay_stack_hands_the_first_layers_spikes_to_the_last(framework):
    """30 layers, T = 4, initialized with relay=1 and a bias set beforehand: every later layer's spike trains
    are the first layer's, unchanged (run by the framework's own neurons), the biases are 0, the report says so."""
    depth, width, steps = 30, 64, 4

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(32 if i == 0 else width, width) for i in range(depth))
            self.neurons = nn.ModuleList(make_neuron(framework) for _ in range(depth))

        def forward(self, x):
            reset_states(self.neurons)
            out = []
            for _ in range(steps):
                h, per_layer = x, []
                for layer, neuron in zip(self.layers, self.neurons):
                    h = neuron(layer(h))
                    per_layer.append(h)
                out.append(torch.stack(per_layer))
            return torch.stack(out, 1)  # (layers, steps, batch, width)

    torch.manual_seed(0)
    model = Stack()
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.fill_(0.3)
    x = torch.rand(128, 32, generator=torch.Generator().manual_seed(1)) * 3
    report = sip.initialize(model, "calibrated", x, relay=1.0, target_rate=0.2,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spikes = model(x) > 0.5  # the user neuron's straight-through spikes are 0/1 up to float rounding
    assert 0.1 < float(spikes[0].float().mean()) < 0.3
    for layer in range(1, depth):
        assert torch.equal(spikes[layer], spikes[0]), layer
        assert float(model.layers[layer].bias.abs().max()) == 0.0
    assert float(model.layers[0].bias.abs().max()) == pytest.approx(0.3)  # not a copy layer: left alone
    assert any("relay=1" in note for row in report.layers for note in row.notes)
    assert report.layers[1].assumed["relay_steps"] == "any"



@pytest.mark.snntorch
def test_copy_relay_with_per_neuron_decays_copies_for_every_decay():
    """snnTorch Leaky with a decay per neuron (0.6 to 0.95): the jump of the mean decay does not copy for the
    leakiest neuron (every 4-step train run through its Leaky), so the copy relay takes the window common to
    the range: over T = 4 steps every layer of an 8-layer stack copies the first exactly; for any length no
    common jump exists and initialize says so, naming the range and the way out, the model unchanged."""
    import snntorch as snn

    width, depth, steps = 64, 8, 4
    betas = torch.linspace(0.6, 0.95, width)
    assert not _snntorch_copies(theory.copy_gain(1.0, float(betas.mean()), steps), 0.6, "subtract",
                                _every_train(steps))

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(32 if i == 0 else width, width) for i in range(depth))
            self.neurons = nn.ModuleList(snn.Leaky(beta=betas.clone()) for _ in range(depth))

        def forward(self, x):
            mems, out = [n.reset_mem() for n in self.neurons], []
            for _ in range(steps):
                h, per_layer = x, []
                for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                    h, mems[i] = neuron(layer(h), mems[i])
                    per_layer.append(h)
                out.append(torch.stack(per_layer))
            return torch.stack(out, 1)

    torch.manual_seed(0)
    model = Stack()
    x = torch.rand(256, 32, generator=torch.Generator().manual_seed(1)) * 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sip.InitError, match="decays from 0.6 to 0.95 have no common jump .* give steps=T"):
        sip.initialize(model, "spike_aware", x, relay=1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sip.initialize(model, "spike_aware", x, relay=1.0, steps=steps)
    with torch.no_grad():
        spikes = model(x)
    assert float(spikes[0].mean()) > 0.05
    assert all(torch.equal(spikes[layer], spikes[0]) for layer in range(1, depth))


# --- the copy relay in convolution stacks (issue 27, part 3) -------------------------------------------
def _conv_stack(framework, convs, steps):
    """``convs`` each followed by a neuron of ``framework``; called on one image batch, it returns every neuron
    layer's spikes over ``steps`` calls of the framework's own neurons, from rest: one (steps, ...) per layer."""
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(convs)
            self.neurons = nn.ModuleList(make_neuron(framework) for _ in convs)

        def forward(self, x):
            reset_states(self.neurons)
            out: list[list[torch.Tensor]] = [[] for _ in convs]
            for _ in range(steps):
                h = x
                for trains, layer, neuron in zip(out, self.layers, self.neurons):
                    h = neuron(layer(h))
                    trains.append(h)
            return [torch.stack(trains) for trains in out]

    return Stack()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_relay_conv_stack_hands_the_first_layers_spikes_to_the_last(framework):
    """10 same-padded 3 × 3 convolutions of 8 channels, T = 4, relay=1: every later layer's spike maps are the
    first layer's, channel by channel and pixel by pixel, run by the framework's own neurons; the copies' biases
    are 0 and their weights the centre tap alone."""
    depth, channels, steps = 10, 8, 4
    torch.manual_seed(0)
    model = _conv_stack(framework, [nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1)
                                    for i in range(depth)], steps)
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 3
    report = sip.initialize(model, "calibrated", x, relay=1.0, target_rate=0.2,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spikes = [trains > 0.5 for trains in model(x)]
    assert 0.1 < float(spikes[0].float().mean()) < 0.3
    for layer in range(1, depth):
        assert torch.equal(spikes[layer], spikes[0]), layer
        weight = model.layers[layer].weight
        assert torch.equal(weight != 0, relay_pattern(weight.shape) != 0) and float(weight.detach().max()) > 1.0
        assert float(model.layers[layer].bias.detach().abs().max()) == 0.0
    assert [row.relay > 0 for row in report.layers] == [False] + [True] * (depth - 1)


def test_copy_relay_conv_geometries_that_still_copy():
    """A dilated 3 × 3 (padding 2), a grouped and a depthwise convolution, a 'same' string padding, a circular
    padding and a stride-1 transposed convolution keep every pixel in place: each copies its input exactly; a
    channel change copies as a Linear width change does (output channel i: input channel i mod 4)."""
    copy_layers = [nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                   nn.Conv2d(4, 4, 5, padding=2, groups=4), nn.Conv2d(4, 4, 3, padding="same", dilation=3),
                   nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), nn.ConvTranspose2d(4, 4, 3, padding=1),
                   nn.Conv2d(4, 8, 3, padding=1)]
    torch.manual_seed(0)
    model = _conv_stack("user", [nn.Conv2d(2, 4, 3, padding=1), *copy_layers], steps=3)
    x = torch.rand(8, 2, 10, 10, generator=torch.Generator().manual_seed(1)) * 3
    sip.initialize(model, "spike_aware", x, relay=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spikes = [trains > 0.5 for trains in model(x)]
    assert float(spikes[0].float().mean()) > 0.05
    for i, layer in enumerate(copy_layers[:-1], start=1):
        assert torch.equal(spikes[i], spikes[0]), layer
    assert torch.equal(spikes[-1], spikes[0][:, :, torch.arange(8) % 4])


@pytest.mark.parametrize("conv,kept", [
    (nn.Conv2d(4, 4, 3, padding=1, stride=2), (slice(None, None, 2), slice(None, None, 2))),
    (nn.Conv2d(4, 4, 3, padding=0), (slice(1, -1), slice(1, -1))),
    (nn.Conv2d(4, 4, 3, padding="valid"), (slice(1, -1), slice(1, -1))),
    (nn.Conv2d(4, 4, 3, padding=1, dilation=2), (slice(1, -1), slice(1, -1))),
    (nn.Conv2d(4, 4, (3, 4), padding=1), (slice(None), slice(1, None))),
])
def test_copy_relay_conv_that_narrows_the_map_copies_what_it_keeps(conv, kept):
    """A stride, a narrower padding or an even kernel without overhang relay one input pixel each: the layer's
    spikes are its input's at the pixels it keeps (sliced by hand), as a narrower Linear copies the inputs it
    keeps, and the report's note says what is left out."""
    torch.manual_seed(0)
    model = _conv_stack("user", [nn.Conv2d(2, 4, 3, padding=1), conv], steps=2)
    x = torch.rand(4, 2, 10, 10, generator=torch.Generator().manual_seed(1)) * 3
    report = sip.initialize(model, "spike_aware", x, relay=1.0, steps=2)
    with torch.no_grad():
        first, second = (trains > 0.5 for trains in model(x))
    assert float(first.float().mean()) > 0.05
    assert torch.equal(second, first[(Ellipsis, *kept)])
    assert any("subsampled, cropped or shifted" in note for note in report.layers[1].notes)


@pytest.mark.parametrize("conv,why", [
    (nn.Conv2d(4, 4, 3, padding=2), "pads 2x2 where kernel 3x3 with dilation 1x1 allows at most 1x1"),
    (nn.Conv2d(4, 4, 3, padding=(1, 3), dilation=(1, 2)), "pads 1x3 .* allows at most 1x2"),
    (nn.Conv2d(4, 4, 2, padding="same"), "kernel 2x2 with \"same\" padding has no centre tap"),
    (nn.ConvTranspose2d(4, 2, 3, padding=1), "ConvTranspose2d copies only at stride 1.* 4 -> 2 channels"),
    (nn.ConvTranspose2d(4, 4, 3, padding=1, stride=2), "ConvTranspose2d copies only at stride 1.* stride 2x2"),
])
def test_copy_relay_refuses_a_conv_that_cannot_copy(conv, why):
    """Before anything is drawn: the error names the entry point, the layer and the geometry; nothing is written;
    the way out it names (relay < 1 for that layer) works."""
    torch.manual_seed(0)
    model = _conv_stack("user", [nn.Conv2d(2, 4, 3, padding=1), conv], steps=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 2, 10, 10, generator=torch.Generator().manual_seed(1)) * 3
    with pytest.raises(sip.InitError, match=f"^initialize: relay=1 \\(the copy relay\\): layers.1.weight cannot "
                                            f"copy its input: .*{why}.*the model is unchanged"):
        sip.initialize(model, "spike_aware", x, relay=1.0, steps=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sip.initialize(model, "spike_aware", x, relay=1.0, steps=2, overrides={"layers.1.weight": {"relay": 0.9}})


def test_the_one_call_copies_through_a_strided_conv_in_a_deep_plain_chain():
    """The one call picks relay=1 for plain chains over 20 layers: a 22-conv chain with one stride-2 layer is
    initialized (not refused), the strided layer copies the subsampled map and every later layer copies it."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(2 if i == 0 else 4, 4, 3, padding=1, stride=2 if i == 5 else 1) for i in range(22)]
    model = _conv_stack("user", convs, steps=2)
    x = torch.rand(4, 2, 12, 12, generator=torch.Generator().manual_seed(1)) * 3
    report = sip.initialize(model, x)
    assert report.layers[5].relay > 0 and any("subsampled" in note for note in report.layers[5].notes)
    with torch.no_grad():
        spikes = [trains > 0.5 for trains in model(x)]
    assert torch.equal(spikes[5], spikes[4][..., ::2, ::2]) and float(spikes[5].float().mean()) > 0.05
    assert all(torch.equal(spikes[i], spikes[5]) for i in range(6, 22))
