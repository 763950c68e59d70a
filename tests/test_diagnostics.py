"""diagnose(): rates, membrane, surrogate support and gradient norms against quantities computed independently
(a step-by-step simulation of the equations, our own hooks, a separate autograd pass), and the model left as it was."""
import copy
import json
import math
import sys

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.diagnostics import DiagnoseError, compare, compare_methods, default_loss, diagnose, plot_comparison
from conftest import spikingjelly_is_legacy
from test_plan import assert_same_state, snapshot


def sigmoid_spike(x):
    """Heaviside forward, derivative h(x) = 4σ(4x)(1 − σ(4x)) (peak 1 at x = 0)."""
    soft = torch.sigmoid(4 * x)
    return (x > 0).to(x.dtype) + soft - soft.detach()


def sigmoid_h(x):
    s = torch.sigmoid(4 * x)
    return 4 * s * (1 - s)


class StepLIF(nn.Module):
    """A user's neuron with its spike function as an attribute: u = βu + x, s = H(u − θ), subtract reset."""

    def __init__(self, beta=0.8, theta=1.0):
        super().__init__()
        self.beta, self.theta = beta, theta
        self.spike_fn = sigmoid_spike
        self.register_buffer("u", torch.zeros(()), persistent=False)

    def forward(self, x):
        if self.u.shape != x.shape:
            self.u = torch.zeros_like(x)
        self.u = self.beta * self.u + x
        spikes = self.spike_fn(self.u - self.theta)
        self.u = self.u - spikes.detach() * self.theta
        return spikes


class Hidden(StepLIF):
    """The same neuron, with the spike function inlined (not observable)."""

    def forward(self, x):
        if self.u.shape != x.shape:
            self.u = torch.zeros_like(x)
        self.u = self.beta * self.u + x
        spikes = sigmoid_spike(self.u - self.theta)
        self.u = self.u - spikes.detach() * self.theta
        return spikes


@pytest.fixture
def registered():
    to_spec = lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.beta, surrogate=m.spike_fn, name="StepLIF")  # noqa: E731
    sip.register_neuron(StepLIF, to_spec=to_spec)
    sip.register_neuron(Hidden, to_spec=to_spec)
    yield
    sip.unregister_neuron(StepLIF)
    sip.unregister_neuron(Hidden)


def make_user_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), StepLIF(0.8, 1.0), nn.Linear(16, 6), StepLIF(0.5, 0.5))
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # some neurons fire, some saturate, some stay silent
        net[0].bias.fill_(0.2)
    return net


def run_steps(net, x):
    """x: [T, B, F]; one call per step; resets first (the neurons keep their state between calls)."""
    for m in net.modules():
        if isinstance(m, StepLIF):
            m.u = torch.zeros(())
    return torch.stack([net(x[t]) for t in range(x.shape[0])])


def simulate(net, x):
    """The equations by hand: per layer, membranes u[t] (before reset) and spikes s[t], each [T, B, N]."""
    out, layers = x, []
    for linear, neuron in ((net[0], net[1]), (net[2], net[3])):
        current = out @ linear.weight.detach().T + linear.bias.detach()
        u, mem, spikes = torch.zeros_like(current[0]), [], []
        for t in range(x.shape[0]):
            u = neuron.beta * u + current[t]
            s = (u > neuron.theta).float()
            mem.append(u.clone())
            spikes.append(s)
            u = u - s * neuron.theta
        layers.append((torch.stack(mem), torch.stack(spikes), neuron.theta))
        out = torch.stack(spikes)
    return layers


def check_layer(row, mem, spikes, theta, h):
    """Compare one LayerDiagnosis with membranes/spikes [T, B, ...] recorded independently."""
    per_neuron = spikes.reshape(-1, spikes[0, 0].numel()).double()
    rates = (per_neuron != 0).double().mean(0)
    assert row.neurons == rates.numel()
    assert row.observations == per_neuron.shape[0]
    assert row.rate == pytest.approx(float(rates.mean()), abs=1e-12)
    assert row.rate_std == pytest.approx(float(rates.std(unbiased=False)), abs=1e-12)
    assert row.silent == pytest.approx(float((rates == 0).double().mean()), abs=1e-12)
    assert row.saturated == pytest.approx(float((rates == 1).double().mean()), abs=1e-12)
    z = mem.double() / theta
    assert row.membrane_mean == pytest.approx(float(z.mean()), rel=1e-5, abs=1e-6)
    assert row.membrane_std == pytest.approx(float(z.std(unbiased=False)), rel=1e-5)
    values = h(mem.double() - theta).abs()
    peak = h(torch.linspace(-3, 3, 600001, dtype=torch.float64)).abs().max()
    assert row.in_support == pytest.approx(float((values > 0.01 * peak).double().mean()), abs=1e-12)


def autograd_norms(net, run, loss_of_output, names):
    """||dL/dW|| by a separate forward and backward pass on a copy of the model."""
    twin = copy.deepcopy(net)
    params = dict(twin.named_parameters())
    loss = loss_of_output(run(twin))
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {n: float(g.double().norm()) for n, g in zip(names, grads)}, loss.item()


# ------------------------------------------------------------------------------------------------------
# framework-free
# ------------------------------------------------------------------------------------------------------
def test_user_neuron_rates_membrane_support_against_simulation(registered):
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    d = diagnose(net, x, forward=run_steps)
    assert [r.neuron for r in d] == ["1", "3"] and [r.depth for r in d] == [0, 1]
    assert d.layer("1").layers == ("0.weight",) and d.layer("3").kind == "StepLIF"
    layers = simulate(net, x)
    for row, (mem, spikes, theta) in zip(d, layers):
        check_layer(row, mem, spikes, theta, sigmoid_h)
        assert row.threshold == theta
    assert 0 < d.layer("1").silent + d.layer("1").saturated < 1  # the test exercises both counts
    assert d.loss is None and all(r.grad_norm is None for r in d)


def test_steps_presents_the_batch_at_every_step_against_simulation(registered):
    """``steps=T`` (and a list of T per-step inputs) on a model called once per step: the same rates,
    membranes and gradients as the hand simulation of the batch repeated T times, from rest."""
    net = make_user_net()
    batch = torch.rand(8, 12)
    repeated = batch.expand(4, 8, 12)
    target = torch.randint(6, (8,))
    for record in (diagnose(net, batch, steps=4, target=target), diagnose(net, [batch] * 4, target=target)):
        for row, (mem, spikes, theta) in zip(record, simulate(net, repeated)):
            check_layer(row, mem, spikes, theta, sigmoid_h)
        expected, loss = autograd_norms(net, lambda m: run_steps(m, repeated),
                                        lambda out: nn.functional.cross_entropy(out.mean(0), target),
                                        ["0.weight", "2.weight"])
        assert record.loss == pytest.approx(loss, rel=1e-6)
        assert record.layer("3").grad_norm == pytest.approx(expected["2.weight"], rel=1e-5)
    one_step = diagnose(net, batch)
    assert one_step.layer("1").observations == 8  # without steps: one call, one step
    assert one_step.layer("3").rate != diagnose(net, batch, steps=4).layer("3").rate


def test_a_diverged_model_is_diagnosed_not_refused(registered):
    """Weights that overflowed (a deep stack that diverged in training): the first layer's membranes are ±inf
    or NaN. diagnose still returns every layer's rate, counted from the spikes the model gave, says how many
    membrane values were not finite, and takes the membrane statistics of the finite ones."""
    net = make_user_net()
    with torch.no_grad():
        net[0].weight[:4] = float("inf")  # units 0-3: +inf or NaN (inf - inf) membranes
    x = torch.rand(5, 8, 12)
    d = diagnose(net, x, forward=run_steps)
    with torch.no_grad():
        spikes = run_steps(net, x)
    assert d.layer("3").rate == pytest.approx(float((spikes != 0).double().mean()), abs=1e-12)
    (note,) = [n for n in d.notes if "not finite" in n]
    assert note.startswith("1: 160 of 640 membrane values are not finite")  # 4 of 16 units × 5 steps × 8
    assert math.isfinite(d.layer("1").membrane_mean)


def test_user_neuron_gradients_against_autograd(registered):
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    target = torch.randint(6, (8,))
    d = diagnose(net, x, target=target, forward=run_steps)
    expected, loss = autograd_norms(net, lambda m: run_steps(m, x),
                                    lambda out: nn.functional.cross_entropy(out.mean(0), target), ["0.weight", "2.weight"])
    assert d.loss == pytest.approx(loss, rel=1e-6)
    assert d.layer("1").layer_grad_norms["0.weight"] == pytest.approx(expected["0.weight"], rel=1e-5)
    assert d.layer("3").grad_norm == pytest.approx(expected["2.weight"], rel=1e-5)
    assert expected["0.weight"] > 0 and "cross-entropy" in d.loss_description

    # a loss_fn of the output, and the MSE default for floating targets
    goal = torch.rand(8, 6)
    by_fn = diagnose(net, x, loss_fn=lambda out: ((out.mean(0) - goal) ** 2).mean(), forward=run_steps)
    by_target = diagnose(net, x, target=goal, forward=run_steps)
    expected, _ = autograd_norms(net, lambda m: run_steps(m, x),
                                 lambda out: ((out.mean(0) - goal) ** 2).mean(), ["0.weight", "2.weight"])
    for record in (by_fn, by_target):
        assert record.layer("1").grad_norm == pytest.approx(expected["0.weight"], rel=1e-5)
        assert record.layer("3").grad_norm == pytest.approx(expected["2.weight"], rel=1e-5)
    assert by_target.loss_description.startswith("MSE")


def test_model_left_as_it_was(registered):
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    run_steps(net, x)  # states from an earlier batch
    net[2].weight.requires_grad_(False)  # a frozen layer: its gradient is measured, its flag kept
    target = torch.randint(6, (8,))
    before = snapshot(net)
    rng = torch.random.get_rng_state()
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()]
    spike_fns = [m.spike_fn for m in net.modules() if isinstance(m, StepLIF)]
    d = diagnose(net, x, target=target, forward=run_steps)
    assert d.layer("3").grad_norm > 0
    assert_same_state(before, snapshot(net))
    assert torch.equal(rng, torch.random.get_rng_state())
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()]
    assert [m.spike_fn for m in net.modules() if isinstance(m, StepLIF)] == spike_fns
    assert all(p.grad is None for p in net.parameters())
    assert not net[2].weight.requires_grad and net[0].weight.requires_grad


def test_state_reset_and_carry_over(registered):
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    fresh = diagnose(net, x, forward=lambda m, inp: torch.stack([m(inp[t]) for t in range(5)]))
    reference = diagnose(net, x, forward=run_steps)
    assert fresh.layer("1").rate == reference.layer("1").rate  # reset_state=True: starts at rest
    net[1].u = torch.full((8, 16), 5.0)  # a left-over state far above threshold
    net[3].u = torch.full((8, 6), 5.0)
    carried = diagnose(net, x, forward=lambda m, inp: torch.stack([m(inp[t]) for t in range(5)]), reset_state=False)
    assert carried.layer("1").rate > reference.layer("1").rate


def test_unobservable_membrane_is_reported(registered):
    net = nn.Sequential(nn.Linear(4, 5), Hidden())
    d = diagnose(net, torch.rand(3, 4))
    row = d.layer("1")
    assert row.membrane_mean is None and row.in_support is None and row.neurons == 5
    assert any("not observable" in note for note in d.notes)
    assert "-" in str(d)


def test_record_prints_serializes_and_compares(registered, tmp_path):
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    d = diagnose(net, x, target=torch.randint(6, (8,)), forward=run_steps, label="as built")
    text = str(d)
    assert "[as built]" in text and "rate" in text and "loss" in text
    assert all(r.neuron in text for r in d)
    path = tmp_path / "diagnosis.json"
    data = json.loads(d.to_json(str(path)))
    assert json.loads(path.read_text()) == data  # the file holds what was returned
    # the JSON carries the measured numbers (floats by repr: exact) and null for what was not measured
    assert data["label"] == "as built" and data["loss"] == d.loss and data["loss"] > 0
    assert [row["rate"] for row in data["layers"]] == [r.rate for r in d]
    assert [row["observations"] for row in data["layers"]] == [8 * 5, 8 * 5]  # 8 samples × 5 steps
    assert data["layers"][1]["neuron"] == "3" and data["layers"][1]["layer_grad_norms"].keys() == {"2.weight"}
    assert data["layers"][1]["grad_norm"] == d.layer("3").layer_grad_norms["2.weight"] > 0

    weights = [p.detach().clone() for p in net.parameters()]
    records = compare_methods(net, x, [None, "kaiming_normal", "ikun"], target=torch.randint(6, (8,)),
                              forward=run_steps, seed=3)
    assert list(records) == ["as built", "kaiming_normal", "ikun"]
    assert records["as built"].layer("1").rate == pytest.approx(d.layer("1").rate)
    assert records["ikun"].label == "ikun" and records["ikun"].layer("1").rate != d.layer("1").rate
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))  # only the copies are initialized
    table = compare(records)
    assert "rate [ikun]" in table and "rate [kaiming_normal]" in table
    assert len(table.splitlines()) == 2 + len(d)


def test_plot(registered, tmp_path):
    pytest.importorskip("matplotlib")
    net = make_user_net()
    x = torch.rand(5, 8, 12)
    d = diagnose(net, x, target=torch.randint(6, (8,)), forward=run_steps, label="a")
    path = tmp_path / "d.png"
    figure = d.plot(str(path))
    assert path.stat().st_size > 0 and len(figure.axes) == 3
    # the axes carry the table's column names: depth · neuron on x, the quantity on y
    header = next(line for line in str(d).splitlines() if line.startswith("depth"))
    assert [ax.get_ylabel() for ax in figure.axes] == ["rate", "sd(u)/θ", "|dL/dW|"]
    assert all(label in header for label in ("depth", "neuron", "rate", "sd(u)/θ", "|dL/dW|"))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [f"{e.depth} · {e.neuron}" for e in d.layers]
    figure = plot_comparison({"a": d, "b": d}, path=str(tmp_path / "c.png"))
    assert len(figure.axes[0].lines) == 2
    from matplotlib.figure import Figure

    axes = Figure().subplots(1, 3)
    assert d.plot(ax=axes) is axes[0].figure
    with pytest.raises(ValueError, match="three Axes"):
        d.plot(ax=axes[:2])


def test_plot_without_matplotlib(registered, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    d = diagnose(nn.Sequential(nn.Linear(4, 5), StepLIF()), torch.rand(3, 4))
    with pytest.raises(ImportError, match="needs matplotlib"):
        d.plot()


def test_default_loss_and_errors(registered):
    out = torch.randn(4, 3, 5)  # [T, B, C]
    labels = torch.tensor([0, 4, 2])
    loss, description = default_loss(out, labels)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(out.mean(0), labels).item())
    goal = torch.rand(3, 5)
    assert default_loss((out, "extra"), goal)[0].item() == pytest.approx(((out.mean(0) - goal) ** 2).mean().item())
    with pytest.raises(DiagnoseError, match="shape"):
        default_loss(out, torch.rand(3, 4))
    with pytest.raises(DiagnoseError, match="do not match"):
        default_loss(out, torch.tensor([0, 1]))
    net = nn.Sequential(nn.Linear(4, 5), StepLIF())
    x = torch.rand(3, 4)
    with pytest.raises(DiagnoseError, match="not both"):
        diagnose(net, x, target=labels, loss_fn=lambda o: o.sum())
    with pytest.raises(DiagnoseError, match="example_input"):
        diagnose(net)
    with pytest.raises(DiagnoseError, match="scalar"):
        diagnose(net, x, loss_fn=lambda o: o)
    with pytest.raises(sip.PlanError, match="no spiking neurons"):
        diagnose(nn.Sequential(nn.Linear(4, 5)), x)


def test_core_import_does_not_load_frameworks():
    import subprocess

    code = ("import sys, snn_initplug.diagnostics, snn_initplug.cli; "
            "print(sorted(m for m in ('snntorch', 'spikingjelly', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------
# snnTorch
# ------------------------------------------------------------------------------------------------------
def atan_h(alpha):
    return lambda x: (alpha / 2) / (1 + (math.pi * alpha * x / 2) ** 2)


@pytest.mark.snntorch
def test_snntorch_time_loop_against_own_hooks():
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(20, 32), snn.Leaky(beta=0.9, spike_grad=surrogate.atan(alpha=3.0))
            self.fc2, self.lif2 = nn.Linear(32, 4), snn.Leaky(beta=0.8, threshold=0.5, reset_mechanism="zero")

        def forward(self, x):
            mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
            out = []
            for t in range(x.shape[0]):
                spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                out.append(spk2)
            return torch.stack(out)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc1.weight.mul_(4)
        net.fc2.weight.mul_(4)
    x = (torch.rand(8, 6, 20) < 0.4).float()

    # our own record: the spikes and the membrane each Leaky returns (the membrane the spike came from)
    seen = {"lif1": ([], []), "lif2": ([], [])}

    def hook(name):
        def record(module, args, output):
            spikes, mem = output
            seen[name][0].append(spikes.detach())
            seen[name][1].append(mem.detach())
        return record

    handles = [getattr(net, name).register_forward_hook(hook(name)) for name in seen]
    with torch.no_grad():  # no graph left in the states, so that the model can be deep-copied below
        out = net(x)
    for handle in handles:
        handle.remove()

    before = snapshot(net)
    target = torch.randint(4, (6,))
    d = diagnose(net, x, target=target)
    assert_same_state(before, snapshot(net))
    assert net.lif1.spike_grad.__qualname__.startswith("atan")  # the closure is back
    for name, theta, alpha in (("lif1", 1.0, 3.0), ("lif2", 0.5, 2.0)):
        spikes, mem = (torch.stack(v) for v in seen[name])
        check_layer(d.layer(name), mem, spikes, theta, atan_h(alpha))
    assert 0 < d.layer("lif1").rate < 1
    expected, loss = autograd_norms(net, lambda m: m(x), lambda o: nn.functional.cross_entropy(o.mean(0), target),
                                    ["fc1.weight", "fc2.weight"])
    assert d.loss == pytest.approx(loss, rel=1e-6)
    assert d.layer("lif1").grad_norm == pytest.approx(expected["fc1.weight"], rel=1e-5)
    assert d.layer("lif2").grad_norm == pytest.approx(expected["fc2.weight"], rel=1e-5)
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():
        assert torch.equal(net(x), out)  # the model runs exactly as before


@pytest.mark.snntorch
def test_snntorch_sequential_init_hidden_conv():
    snn = pytest.importorskip("snntorch")
    from snntorch import utils

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), snn.Leaky(beta=0.7, init_hidden=True, learn_threshold=True,
                                                       threshold=torch.full((4, 1, 1), 0.8)),
                        nn.Flatten(), nn.Linear(4 * 6 * 6, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = torch.rand(5, 1, 8, 8) * 2

    def forward(model, inp):
        utils.reset(model)
        return torch.stack([model(inp)[0] for _ in range(4)])

    seen = {"1": ([], []), "4": ([], [])}

    def hook(name):
        def record(m, a, o):
            spikes = o[0] if isinstance(o, tuple) else o
            seen[name][0].append(spikes.detach())
            seen[name][1].append(m.mem.detach().clone())
        return record

    handles = [net[int(n)].register_forward_hook(hook(n)) for n in seen]
    forward(net, x)
    for handle in handles:
        handle.remove()
    forward(net, x)  # leave state behind, as a model in use does
    before = snapshot(net)
    d = diagnose(net, x, forward=forward)
    assert_same_state(before, snapshot(net))
    spikes, mem = (torch.stack(v) for v in seen["1"])
    theta = net[1].threshold.detach().double()
    row = d.layer("1")
    assert row.neurons == 4 * 6 * 6 and row.observations == 4 * 5
    check_layer(row, mem, spikes, theta, atan_h(2.0))  # a threshold per channel, broadcast over [T, B, C, H, W]
    assert row.threshold == pytest.approx(0.8)
    spikes, mem = (torch.stack(v) for v in seen["4"])
    check_layer(d.layer("4"), mem, spikes, 1.0, atan_h(2.0))


# ------------------------------------------------------------------------------------------------------
# SpikingJelly (2.x and 0.0.0.0.14)
# ------------------------------------------------------------------------------------------------------
def sj_simulate(net, x):
    """LIF (τ = 2, decay_input, hard reset to 0) then IF (soft reset), by hand: [(H, S, θ)] per layer."""
    layers, out = [], x
    for linear, node, kind in ((net[0], net[1], "lif"), (net[2], net[3], "if")):
        current = out @ linear.weight.detach().T + linear.bias.detach()
        v, hs, ss = torch.zeros_like(current[0]), [], []
        theta = node.v_threshold
        for t in range(x.shape[0]):
            h = v + (current[t] - v) / node.tau if kind == "lif" else v + current[t]
            s = (h >= theta).float()
            v = h * (1 - s) if kind == "lif" else h - s * theta
            hs.append(h)
            ss.append(s)
        layers.append((torch.stack(hs), torch.stack(ss), theta))
        out = torch.stack(ss)
    return layers


@pytest.mark.spikingjelly
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_spikingjelly_against_simulation(training, step_mode):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    torch.manual_seed(2)
    net = nn.Sequential(layer.Linear(10, 24, step_mode=step_mode),
                        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode=step_mode),
                        layer.Linear(24, 5, step_mode=step_mode),
                        neuron.IFNode(v_reset=None, v_threshold=0.5, step_mode=step_mode))  # the shared default Sigmoid
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    net.train(training)
    x = torch.rand(6, 7, 10) * 2

    def forward(model, inp):
        functional.reset_net(model)
        if step_mode == "m":
            return model(inp)
        return torch.stack([model(inp[t]) for t in range(inp.shape[0])])

    out = forward(net, x)
    sigmoid = net[3].surrogate_function
    before = snapshot(net)
    target = torch.randint(5, (7,))
    d = diagnose(net, x, target=target, forward=forward)
    assert_same_state(before, snapshot(net))
    assert net[3].surrogate_function is sigmoid and isinstance(net[1].surrogate_function, surrogate.ATan)
    assert [m.training for m in net.modules()] == [training] * len(list(net.modules()))
    assert all(p.grad is None for p in net.parameters())

    layers = sj_simulate(net, x)
    assert torch.equal(layers[1][1], out)  # the simulation is SpikingJelly's network
    alpha = sigmoid.alpha
    sigmoid_h = lambda v: alpha * torch.sigmoid(alpha * v) * (1 - torch.sigmoid(alpha * v))  # noqa: E731
    check_layer(d.layer("1"), layers[0][0], layers[0][1], 1.0, atan_h(2.0))
    check_layer(d.layer("3"), layers[1][0], layers[1][1], 0.5, sigmoid_h)
    assert 0 < d.layer("1").rate < 1

    def run(model):
        # 0.0.0.0.14 in eval mode runs TorchScript kernels without gradients; diagnose runs its neurons in
        # training mode (the same equations), which for this model (no BatchNorm, no Dropout) is model.train()
        if spikingjelly_is_legacy():
            model.train()
        return forward(model, x)

    expected, loss = autograd_norms(net, run, lambda o: nn.functional.cross_entropy(o.mean(0), target),
                                    ["0.weight", "2.weight"])
    assert d.loss == pytest.approx(loss, rel=1e-6)
    assert d.layer("1").grad_norm == pytest.approx(expected["0.weight"], rel=1e-4)
    assert d.layer("3").grad_norm == pytest.approx(expected["2.weight"], rel=1e-4)
    assert torch.equal(forward(net, x), out)


@pytest.mark.spikingjelly
def test_spikingjelly_conv_bn_container():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    torch.manual_seed(3)
    net = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)),
                        neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=surrogate.Erf()),
                        layer.Flatten(step_mode="m"), layer.Linear(4 * 6 * 6, 3, step_mode="m"),
                        neuron.LIFNode(tau=2.0, step_mode="m"))
    x = torch.rand(4, 5, 1, 6, 6) * 3
    seen = {}
    handle = net[1].register_forward_hook(lambda m, a, o: seen.setdefault("spikes", o.detach()))
    functional.reset_net(net)
    net(x)
    handle.remove()
    before = snapshot(net)
    d = diagnose(net, x, target=torch.randint(3, (5,)))
    assert_same_state(before, snapshot(net))  # BatchNorm running statistics included
    row = d.layer("1")
    assert row.layers == ("0.0.weight",) and row.neurons == 4 * 6 * 6 and row.observations == 4 * 5
    rates = seen["spikes"].reshape(20, -1).mean(0)
    assert row.rate == pytest.approx(float(rates.mean()), abs=1e-7)
    assert row.silent == pytest.approx(float((rates == 0).double().mean()))
    assert row.grad_norm > 0 and d.layer("4").grad_norm > 0
