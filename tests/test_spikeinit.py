"""SpikeInit (Shi & Yu 2026): the closure, P_static and α* against the shared reference numbers, the weight scale
against simulations of the neuron written here, the frameworks' own neurons and surrogates, the all-or-nothing
write of weights and surrogates, and bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import integrate, optimize

import snn_initplug as sip
from snn_initplug.stationary import (
    closure_rate_limit,
    gradient_target,
    spike_input_std,
    static_firing_probability,
    stationary_membrane,
)


class _Laplace(torch.autograd.Function):
    """The paper's surrogate: a step forward, α·exp(−2α|x|) backward."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.alpha * torch.exp(-2 * ctx.alpha * x.abs()), None


def laplace(alpha):
    def spike(x):
        return _Laplace.apply(x, alpha)
    return spike


# ------------------------------------------------------------------------------------------------------
# The reference numbers (shared doc: κ = λ = 0.5, θ = 1, p = 0.1)
# ------------------------------------------------------------------------------------------------------
def test_reference_numbers():
    scale = sip.calculate_spikeinit(target_rate=0.1, decay=0.5, input_scale=0.5, threshold=1.0)
    assert scale.weight_scale == pytest.approx(5.157, rel=1e-3)
    assert scale.membrane_mean == pytest.approx(-0.1422, rel=1e-3)
    assert scale.membrane_std == pytest.approx(0.8913, rel=1e-3)
    static = sip.calculate_spikeinit(target_rate=0.1, decay=0.5, input_scale=0.5, threshold=1.0, input="static")
    assert static.weight_scale == pytest.approx(1.1425, rel=1e-3)
    assert scale.surrogate_shape(laplace) == pytest.approx(1.153, rel=1e-3)


def test_closure_equations_hold_at_the_solution():
    """Both balance equations of Theorem 4.1, evaluated here from their text, vanish at the returned (μ, σ_y)."""
    from scipy.stats import norm
    for s, kappa, theta in [(0.8, 0.5, 1.0), (0.3, 0.8, 0.5), (2.0, 0.2, 1.5)]:
        m = stationary_membrane(s, kappa, theta)
        a = (theta - m.mean) / m.std
        second = m.mean**2 + m.std**2
        assert kappa * (m.mean * norm.cdf(a) - m.std * norm.pdf(a)) == pytest.approx(m.mean, abs=1e-9)
        assert kappa**2 * (second * norm.cdf(a) - m.std * (theta + m.mean) * norm.pdf(a)) + s * s \
            == pytest.approx(second, rel=1e-9)
        assert m.rate == pytest.approx(norm.sf(a), rel=1e-9)


def _simulate(s, kappa, theta, steps, neurons=200_000, held=False, seed=0):
    """The neuron y_t = κ y_{t-1} + x_t with a hard reset to 0, written out here: the rate at every step."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(neurons, dtype=torch.float64)
    fixed = s * torch.randn(neurons, generator=g, dtype=torch.float64)
    rates = []
    for _ in range(steps):
        x = fixed if held else s * torch.randn(neurons, generator=g, dtype=torch.float64)
        y = kappa * y + x
        fired = y >= theta
        rates.append(fired.double().mean().item())
        y = torch.where(fired, torch.zeros_like(y), y)
    return rates


def test_reference_monte_carlo_steps():
    """At σ* the neuron fires at 0.110, 0.109, 0.104, 0.101 over steps 1-4 (the shared doc's Monte Carlo)."""
    s = spike_input_std(0.1, 0.5, 1.0)
    rates = _simulate(s, 0.5, 1.0, 4, neurons=400_000)
    assert rates == pytest.approx([0.110, 0.109, 0.104, 0.101], abs=2e-3)


@pytest.mark.parametrize("kappa, theta, p", [(0.3, 2.0, 0.2), (0.6, 1.0, 0.15), (0.7, 1.0, 0.1)])
def test_stationary_rate_at_sigma_star(kappa, theta, p):
    """Away from the doc's point: the neuron simulated at the closure's σ* fires at p within 2% (stationary)."""
    s = spike_input_std(p, kappa, theta)
    burn = 20 + int(10 / (1 - kappa))
    rates = _simulate(s, kappa, theta, 2 * burn)[burn:]
    assert np.mean(rates) == pytest.approx(p, rel=0.02)


@pytest.mark.parametrize("kappa, theta, p", [(0.5, 1.0, 0.1), (0.9, 0.5, 0.05), (0.2, 1.0, 0.3)])
def test_static_rate(kappa, theta, p):
    """P_static against the neuron with one held input per neuron, run long enough to count whole periods."""
    s = sip.calculate_spikeinit(target_rate=p, decay=kappa, input_scale=1.0, threshold=theta, input="static",
                                input_second_moment=1.0).weight_scale
    assert static_firing_probability(s, kappa, theta) == pytest.approx(p, rel=1e-9)
    rates = _simulate(s, kappa, theta, 400, held=True)
    assert np.mean(rates) == pytest.approx(p, rel=0.02)


def test_gradient_target_over_steps_tends_to_the_stationary_one():
    stationary = gradient_target(0.1, 0.5, 5.157, 0.5)
    assert stationary == pytest.approx((1 - 0.9 * 0.25) / (5.157 * 0.5) ** 2)
    assert gradient_target(0.1, 0.5, 5.157, 0.5, steps=1) == pytest.approx(1 / (5.157 * 0.5) ** 2)
    assert gradient_target(0.1, 0.5, 5.157, 0.5, steps=4000) == pytest.approx(stationary, rel=1e-3)


def test_unreachable_target_is_refused_naming_the_limit():
    limit = closure_rate_limit(0.9)
    assert 0.18 < limit < 0.19
    with pytest.raises(sip.InitError, match=r"out of reach.*0\.18"):
        sip.calculate_spikeinit(target_rate=0.2, decay=0.9, input_scale=0.1, threshold=1.0)
    # the simulated variant reaches it
    scale = sip.calculate_spikeinit(target_rate=0.2, decay=0.9, input_scale=0.1, threshold=1.0, steps=4)
    assert scale.rate == pytest.approx(0.2, rel=0.01)


@pytest.mark.parametrize("reset, timing", [("subtract", "next_step"), ("subtract", "after_spike"), ("hard", None)])
def test_simulated_variant_against_an_independent_simulation(reset, timing):
    """Algorithm 3 over T = 4 steps: the neuron written out here (with its input mean held per neuron, as fixed
    weights hold it) fires at p on average at the returned scale."""
    p, kappa, theta, lam = 0.1, 0.9, 1.0, 1.0
    scale = sip.calculate_spikeinit(target_rate=p, decay=kappa, input_scale=lam, threshold=theta, reset=reset,
                                    reset_timing=timing, steps=4)
    decays = timing == "after_spike"
    assert "simulated" in scale.how
    g = torch.Generator().manual_seed(7)
    n = 400_000
    s = scale.weight_scale * math.sqrt(p)
    held = s * math.sqrt(p) * torch.randn(n, generator=g, dtype=torch.float64)
    y, fired, total = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool), 0.0
    for _ in range(4):
        x = held + s * math.sqrt(1 - p) * torch.randn(n, generator=g, dtype=torch.float64)
        y = kappa * y + x - (theta * fired if reset == "subtract" and not decays else 0.0)
        fired = y >= theta
        total += fired.double().mean().item() / 4
        if reset == "hard":
            y = torch.where(fired, torch.zeros_like(y), y)
        elif decays:
            y = y - theta * fired
    assert total == pytest.approx(p, rel=0.02)


def test_tensor_function_draws_the_law():
    w = sip.spikeinit_(torch.empty(400, 300), target_rate=0.1, decay=0.5, input_scale=0.5,
                       generator=torch.Generator().manual_seed(0))
    assert w.std().item() * math.sqrt(300) == pytest.approx(5.157, rel=0.01)
    assert abs(w.mean().item()) < 0.01


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, float("nan"), "0.1", True])
def test_bad_target_rates_raise(bad):
    with pytest.raises(sip.OptionError, match="target_rate"):
        sip.calculate_spikeinit(target_rate=bad)


def test_ding_baseline():
    w = sip.baseline_(torch.empty(500, 400), "ding", threshold=0.5, input_scale=0.5,
                      generator=torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx(math.sqrt(2) * 0.5 / 0.5 / math.sqrt(400), rel=0.02)


# ------------------------------------------------------------------------------------------------------
# SpikingJelly: LIF and IF stacks, ATan reshaped per neuron
# ------------------------------------------------------------------------------------------------------
def _sj_alpha_independent(surrogate_cls, target, mean, std):
    """α* by scipy: quadrature of the square of the SpikingJelly surrogate's own autograd derivative."""
    def m2(alpha):
        sg = surrogate_cls(alpha=alpha)

        def integrand(u):  # u = y − θ ~ N(mean, std²)
            x = torch.tensor([u], dtype=torch.float64, requires_grad=True)
            (grad,) = torch.autograd.grad(sg(x).sum(), x)
            return grad.item() ** 2 * math.exp(-0.5 * ((u - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        return integrate.quad(integrand, mean - 12 * std, mean + 12 * std, points=[0.0], limit=400, epsabs=1e-13)[0]
    return optimize.brentq(lambda a: m2(a) - target, 0.05, 50.0, xtol=1e-10)


@pytest.mark.spikingjelly
@pytest.mark.parametrize("tau, theta, p", [(2.0, 1.0, 0.1), (4.0, 0.5, 0.05)])
def test_spikingjelly_lif_stack(tau, theta, p):
    from spikingjelly.activation_based import neuron, surrogate
    shared = surrogate.ATan()
    width = 200
    net = nn.Sequential(*[m for _ in range(4) for m in (
        nn.Linear(width, width), neuron.LIFNode(tau=tau, decay_input=True, v_reset=0.0, v_threshold=theta,
                                                surrogate_function=shared))])
    x = (torch.rand(64, width, generator=torch.Generator().manual_seed(0)) < p).float()
    report = sip.initialize(net, "spikeinit", x, target_rate=p, generator=torch.Generator().manual_seed(1))
    kappa = lam = 1 / tau
    kappa = 1 - kappa
    sigma = spike_input_std(p, kappa, theta) / (lam * math.sqrt(p))
    membrane = stationary_membrane(spike_input_std(p, kappa, theta), kappa, theta)
    alpha = _sj_alpha_independent(surrogate.ATan, (1 - (1 - p) * kappa**2) / (sigma * lam) ** 2,
                                  membrane.mean - theta, membrane.std)
    for i in (2, 4, 6):  # the hidden layers: fed by neurons at p
        assert net[i].weight.std().item() * math.sqrt(width) == pytest.approx(sigma, rel=0.01)
        assert net[i + 1].surrogate_function.alpha == pytest.approx(alpha, rel=0.01)
    surrogates = [net[i].surrogate_function for i in (1, 3, 5, 7)]
    assert len({id(s) for s in surrogates}) == 4 and all(s is not shared for s in surrogates)
    assert shared.alpha == 2.0  # the object the user passed is untouched
    assert "alpha 2 ->" in report.layers[1].assumed["surrogate"]


@pytest.mark.spikingjelly
@pytest.mark.parametrize("kind", ["if", "soft_lif"])
def test_spikingjelly_if_and_soft_reset_simulated(kind):
    from spikingjelly.activation_based import neuron, surrogate
    width, p = 128, 0.1
    make = (lambda: neuron.IFNode(v_reset=0.0, surrogate_function=surrogate.Sigmoid())) if kind == "if" else \
        (lambda: neuron.LIFNode(tau=2.0, v_reset=None, surrogate_function=surrogate.Sigmoid()))
    net = nn.Sequential(nn.Linear(width, width), make(), nn.Linear(width, width), make())
    x = (torch.rand(16, width, generator=torch.Generator().manual_seed(0)) < p).float()
    report = sip.initialize(net, "spikeinit", x, target_rate=p, steps=4)
    row = report.layers[1]
    assert "simulated (over 4 steps" in row.assumed["how"]
    assert row.assumed["rate"] == pytest.approx(p, rel=0.01)
    shown = float(report.layers[1].assumed["surrogate"].split("->")[1])
    assert net[3].surrogate_function.alpha == pytest.approx(shown, rel=1e-3) and net[3].surrogate_function.alpha != 4.0


@pytest.mark.spikingjelly
def test_calibrated_start_and_untouched_surrogates():
    from spikingjelly.activation_based import neuron, surrogate
    width, p = 64, 0.1
    net = nn.Sequential(nn.Linear(width, width), neuron.LIFNode(v_reset=0.0, surrogate_function=surrogate.ATan()),
                        nn.Linear(width, width), neuron.LIFNode(v_reset=0.0, surrogate_function=surrogate.ATan()))
    x = (torch.rand(32, width, generator=torch.Generator().manual_seed(0)) < p).float()
    before = [net[i].surrogate_function for i in (1, 3)]
    report = sip.initialize(net, "spikeinit", x, target_rate=p, surrogate=False)
    assert [net[i].surrogate_function for i in (1, 3)] == before and all(s.alpha == 2.0 for s in before)
    assert "surrogate untouched" in report.layers[0].notes[0]
    report = sip.initialize(net, "calibrated", x, start="spikeinit", target_rate=p, steps=4)
    assert report.method.startswith("calibrated")
    assert report.layers[0].assumed["how"].startswith("simulated (over 4 steps")  # the start took steps=4
    assert net[1].surrogate_function is not before[0] and net[1].surrogate_function.alpha != 2.0


@pytest.mark.spikingjelly
def test_failure_mid_write_restores_weights_and_surrogates():
    from spikingjelly.activation_based import neuron, surrogate

    class Refusing(neuron.LIFNode):
        """Refuses a new surrogate after construction: the write fails after the weights and one surrogate."""

        def __setattr__(self, name, value):
            if name == "surrogate_function" and getattr(self, "_built", False):
                raise RuntimeError("no new surrogate here")
            super().__setattr__(name, value)

    shared = surrogate.ATan()
    last = Refusing(v_reset=0.0, surrogate_function=shared)
    last._built = True
    net = nn.Sequential(nn.Linear(32, 32), neuron.LIFNode(v_reset=0.0, surrogate_function=shared),
                        nn.Linear(32, 32), last)
    x = (torch.rand(16, 32, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    weights = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(RuntimeError, match="no new surrogate"):
        sip.initialize(net, "spikeinit", x, target_rate=0.1)
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert net[1].surrogate_function is shared and net[3].surrogate_function is shared and shared.alpha == 2.0


@pytest.mark.spikingjelly
@pytest.mark.parametrize("options, match", [({"target_rate": 1.5}, "target_rate"),
                                            ({"target_rate": float("nan")}, "target_rate"),
                                            ({"target_rate": 0.3}, "out of reach")])
def test_bad_inputs_leave_the_model_unchanged(options, match):
    from spikingjelly.activation_based import neuron, surrogate
    net = nn.Sequential(nn.Linear(16, 16), neuron.LIFNode(tau=10.0, v_reset=0.0, surrogate_function=surrogate.ATan()),
                        nn.Linear(16, 16), neuron.LIFNode(tau=10.0, v_reset=0.0, surrogate_function=surrogate.ATan()))
    x = (torch.rand(8, 16, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    weights = [p.detach().clone() for p in net.parameters()]
    surrogates = [net[1].surrogate_function, net[3].surrogate_function]
    with pytest.raises(sip.InitError, match=match):
        sip.initialize(net, "spikeinit", x, **options)
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert [net[1].surrogate_function, net[3].surrogate_function] == surrogates


# ------------------------------------------------------------------------------------------------------
# snnTorch: Leaky (subtract reset) through 50 layers, IF, a shared closure, a user callable
# ------------------------------------------------------------------------------------------------------
@pytest.mark.snntorch
def test_snntorch_leaky_50_layers_rate_at_every_layer():
    """Every layer of a 50-layer Leaky stack (β = 0.9, subtractive reset), at the std it drew, fed by spikes at
    p: snnTorch's own Leaky update, run here on 4096 neurons per layer whose rows are drawn at that std
    (Gaussian input current per neuron from its row: its held mean p·Σw and temporal variance p(1−p)·Σw²),
    fires at p within 5% stationary."""
    import snntorch as snn
    layers, width, p, beta = 50, 256, 0.1, 0.9
    shared = snn.surrogate.atan()
    net = nn.Sequential(*[m for _ in range(layers) for m in (
        nn.Linear(width, width, bias=False), snn.Leaky(beta=beta, spike_grad=shared, init_hidden=True))])
    x = (torch.rand(8, width, generator=torch.Generator().manual_seed(0)) < p).float()
    report = sip.initialize(net, "spikeinit", x, target_rate=p, generator=torch.Generator().manual_seed(1))
    assert "simulated (stationary" in report.layers[1].assumed["how"]
    rng = np.random.default_rng(2)
    neurons = 16384
    stds = np.array([[net[2 * i].weight.std().item()] for i in range(layers)])
    # a row of `width` weights of std σ: Σw ~ N(0, width σ²), Σw² ~ σ² χ²(width)
    mean = torch.from_numpy(p * stds * math.sqrt(width) * rng.standard_normal((layers, neurons)))
    std = torch.from_numpy(np.sqrt(p * (1 - p) * stds**2 * rng.chisquare(width, (layers, neurons))))
    g = torch.Generator().manual_seed(3)
    lif = snn.Leaky(beta=beta)
    mem = torch.zeros(layers, neurons, dtype=torch.float64)
    burn, counted, fired = 100, 200, torch.zeros(layers, dtype=torch.float64)
    with torch.no_grad():
        for t in range(burn + counted):
            spk, mem = lif(mean + std * torch.randn(layers, neurons, generator=g, dtype=torch.float64), mem)
            if t >= burn:
                fired += spk.mean(1) / counted
    assert (fired / p - 1).abs().max() < 0.05, sorted(fired.tolist())
    # one closure passed to every layer: each neuron got its own, the user's is unchanged
    closures = [net[2 * i + 1].spike_grad for i in range(layers)]
    assert len({id(c) for c in closures}) == layers and shared not in closures
    assert sip.surrogate.describe_surrogate(shared) == ("atan", {"alpha": 2.0})


@pytest.mark.snntorch
def test_snntorch_if_and_user_callable():
    import snntorch as snn
    width, p = 64, 0.1
    custom = snn.Leaky(beta=1.0, init_hidden=True, spike_grad=lambda x: torch.sigmoid(4 * x))
    net = nn.Sequential(nn.Linear(width, width), snn.Leaky(beta=1.0, init_hidden=True,
                                                           spike_grad=snn.surrogate.fast_sigmoid(slope=25)),
                        nn.Linear(width, width), custom)
    x = (torch.rand(16, width, generator=torch.Generator().manual_seed(0)) < p).float()
    user_fn = custom.spike_grad
    with pytest.raises(sip.InitError, match="steps=T"):  # IF: no stationary rate
        sip.initialize(net, "spikeinit", x, target_rate=p)
    report = sip.initialize(net, "spikeinit", x, target_rate=p, steps=4)
    assert custom.spike_grad is user_fn
    assert any("scale_membrane" in note for note in report.layers[1].notes)
    kind, params = sip.surrogate.describe_surrogate(net[1].spike_grad)
    assert kind == "fast_sigmoid" and params["slope"] != 25


@pytest.mark.snntorch
def test_snntorch_per_neuron_decays_are_simulated_per_neuron():
    """Per-neuron β (one per output unit): the simulated variant runs each neuron with its own decay; the
    same scale, run here neuron by neuron with Gaussian input (held mean p·Σw, fresh part), fires at p."""
    import snntorch as snn
    width, p = 64, 0.1
    betas = torch.linspace(0.3, 0.9, width)
    net = nn.Sequential(nn.Linear(width, width, bias=False), snn.Leaky(beta=betas.clone(), init_hidden=True),
                        nn.Linear(width, width, bias=False), snn.Leaky(beta=betas.clone(), init_hidden=True))
    x = (torch.rand(16, width, generator=torch.Generator().manual_seed(0)) < p).float()
    report = sip.initialize(net, "spikeinit", x, target_rate=p, surrogate=False)
    row = report.layers[1]
    assert row.assumed["how"].startswith("simulated (stationary")
    sigma = row.assumed["sigma_star"]
    g = torch.Generator().manual_seed(5)
    per = 2048
    beta = betas.double().repeat(per)
    n = beta.numel()
    held = sigma * p * torch.randn(n, generator=g, dtype=torch.float64)
    y, fired, total, burn = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool), 0.0, 100
    for t in range(2 * burn):
        y = beta * y + held + sigma * math.sqrt(p * (1 - p)) * torch.randn(n, generator=g, dtype=torch.float64) \
            - fired.double()
        fired = y >= 1.0
        if t >= burn:
            total += fired.double().mean().item() / burn
    assert total == pytest.approx(p, rel=0.03)
