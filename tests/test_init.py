"""Initializers: tensor-level functions against their formulas, and initialize() on models."""
import json
import math

import pytest
import torch
import torch.nn as nn
from scipy import stats

import snn_initplug as sip
from snn_initplug import theory
from snn_initplug.init import baseline_law, calculate_fans, sample, Law


def empirical_std_ok(tensor, std, mean=0.0, z=5.0):
    """The sample std and mean of n i.i.d. draws agree with the law within z standard errors."""
    x = tensor.detach().double().flatten()
    n = x.numel()
    se_mean = std / math.sqrt(n)
    se_std = std / math.sqrt(2 * n)  # normal approximation; fine for n in the thousands
    assert abs(x.mean().item() - mean) < z * se_mean, (x.mean().item(), mean)
    assert abs(x.std().item() - std) < z * se_std * 1.5, (x.std().item(), std)


class ATanLike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi * a * x / 2) ** 2), None


def atan(alpha=2.0):
    def spike(x):
        return ATanLike.apply(x, alpha)

    return spike


# ------------------------------------------------------------------------------------------------------
# IKUN
# ------------------------------------------------------------------------------------------------------
def test_ikun_reference_kappa_and_released_std_table():
    assert theory.ikun_reference_kappa() == pytest.approx(1.27370, abs=5e-6)
    # reference-ikun.md, the experiment network with 128 channels (v1) and the linear layers (v2)
    layers = {"conv1": (torch.empty(128, 1, 3, 3), 0.3762), "conv2": (torch.empty(128, 128, 3, 3), 0.03325),
              "fc1": (torch.empty(2048, 6272), 0.01425), "fc2": (torch.empty(10, 2048), 0.02494)}
    for name, (w, std) in layers.items():
        fan_in, _ = calculate_fans(w)
        got = math.sqrt(theory.ikun_variance(fan_in, sip.calculate_ikun_gain(variant="reference")))
        assert got == pytest.approx(std, abs=0.5e-4 if std > 0.1 else 0.5e-5), name
    for w, std in ((torch.empty(2048, 6272), 0.01237), (torch.empty(10, 2048), 0.02488)):
        fan_in, fan_out = calculate_fans(w)
        got = math.sqrt(theory.ikun_variance(fan_in + fan_out, theory.ikun_reference_kappa()))
        assert got == pytest.approx(std, abs=0.5e-5)


def test_ikun_tensor_statistics_v1_v2_and_conv_fan_out():
    g = torch.Generator().manual_seed(0)
    w = torch.empty(256, 128, 3, 3)
    sip.ikun_(w, variant="reference", version="v2", generator=g)
    fan_in, fan_out = 128 * 9, 256 * 9  # PyTorch's conv fan_out, where the released v2 crashes
    empirical_std_ok(w, math.sqrt(theory.ikun_reference_kappa() / (fan_in + fan_out)))
    w = torch.empty(512, 300)
    sip.ikun_(w, atan(2.0), generator=g)  # surrogate variant: kappa = 1/E_U(-1,1)[h] = pi/atan(pi)
    empirical_std_ok(w, math.sqrt(math.pi / math.atan(math.pi) / 300))


def test_ikun_surrogate_kappa_options():
    # Normal distribution: E[h] is a Voigt profile for an ATan surrogate
    from scipy.special import voigt_profile

    kappa = sip.calculate_ikun_gain(atan(2.0), distribution=sip.surrogate.Normal(0.0, 1.0))
    assert kappa == pytest.approx(1 / voigt_profile(0.0, 1.0, 1 / math.pi), rel=1e-7)
    k2 = sip.calculate_ikun_gain(atan(2.0), moment=2)
    assert k2 > kappa  # E[h^2] < E[h] for a surrogate with peak 1
    with pytest.warns(UserWarning, match="κ = .* narrow"):
        sip.calculate_ikun_gain(atan(0.05))
    with pytest.raises(sip.InitError, match="moment"):
        sip.calculate_ikun_gain(atan(), moment=3)
    with pytest.raises(sip.InitError, match="positive finite"):
        sip.calculate_ikun_gain(lambda x: torch.relu(x - 5) + (x > 0).float() * 0)  # h = 0 on [-1, 1]


# ------------------------------------------------------------------------------------------------------
# Spike-aware
# ------------------------------------------------------------------------------------------------------
def test_spike_aware_gain_values():
    assert sip.calculate_spike_aware_gain(1.0) == pytest.approx(1 / (1 - stats.norm.cdf(1.0)), rel=1e-12)  # 6.30
    # a target rate r gives sigma_u = theta / Phi^-1(1 - r), and q = r for spike input
    r = 0.05
    sigma = 1.0 / stats.norm.ppf(1 - r)
    assert sip.calculate_spike_aware_gain(1.0, target_rate=r) == pytest.approx(sigma**2 / r, rel=1e-12)
    assert sip.calculate_spike_aware_gain(1.0, input_second_moment=0.5, kernel_sq_sum=2.0) == pytest.approx(1.0)
    with pytest.raises(sip.InitError, match="not both"):
        sip.calculate_spike_aware_gain(1.0, target_rate=0.1, sigma_u=1.0)
    with pytest.raises(sip.InitError, match=r"\(0, 0.5\)"):
        sip.calculate_spike_aware_gain(1.0, target_rate=0.7)
    with pytest.raises(sip.InitError, match="silent input"):
        sip.calculate_spike_aware_gain(1.0, input_second_moment=0.0)


def test_spike_aware_tensor_statistics():
    w = torch.empty(400, 512)
    sip.spike_aware_(w, 1.0, generator=torch.Generator().manual_seed(1))
    empirical_std_ok(w, math.sqrt(6.302974 / 512))


# ------------------------------------------------------------------------------------------------------
# Fluctuation-driven
# ------------------------------------------------------------------------------------------------------
def test_fluctuation_law_and_simulated_membrane():
    """The free membrane of an LIF driven by Bernoulli spikes through these weights has mean mu_U, std sigma_U."""
    fan_in, p, beta = 400, 0.05, 0.9
    spec = sip.NeuronSpec(threshold=1.0, beta=beta)
    law = sip.calculate_fluctuation(fan_in, kernel_sums=spec.kernel_sums(), input_rate=p, mu_u=0.2, sigma_u=0.5)
    assert law.mean == pytest.approx(0.2 / (fan_in * p / (1 - beta)))
    assert law.std**2 == pytest.approx(0.25 / (fan_in * p / (1 - beta**2)) - law.mean**2)
    g = torch.Generator().manual_seed(0)
    neurons = 1000
    w = sample(law, (fan_in, neurons), dtype=torch.float64, generator=g)  # each neuron its own weights
    u = torch.zeros(4, neurons, dtype=torch.float64)  # 4 independent input streams
    trace = []
    for t in range(1600):  # long enough that the autocorrelated variance estimate is unbiased to ~1%
        spikes = (torch.rand(4, fan_in, generator=g, dtype=torch.float64) < p).double()
        u = beta * u + spikes @ w
        if t >= 100:  # after the transient (beta^100 ~ 3e-5)
            trace.append(u.clone())
    trace = torch.stack(trace)  # [time, stream, neuron]
    # the mean over neurons and time is mu_U (spread of per-neuron means: p sum K sqrt(fan_in) sigma_w / sqrt(neurons))
    spread = p * spec.kernel_sums()[0] * math.sqrt(fan_in) * law.std / math.sqrt(neurons)
    assert abs(trace.mean().item() - 0.2) < 5 * spread + 0.01
    # the temporal variance is sigma_U^2 (1 - p): the formula counts Poisson-like inputs, Bernoulli ones have p(1 - p)
    temporal = trace.var(dim=0).mean().item()
    assert temporal == pytest.approx(0.25 * (1 - p), rel=0.05)


def test_fluctuation_impossible_statistics_raise():
    with pytest.raises(sip.InitError, match="impossible"):
        sip.calculate_fluctuation(10, kernel_sums=(2.0, 4 / 3), input_rate=0.5, mu_u=3.0, sigma_u=0.1)
    with pytest.raises(sip.InitError, match="input rate"):
        sip.calculate_fluctuation(10, kernel_sums=(2.0, 4 / 3))


# ------------------------------------------------------------------------------------------------------
# Baselines and sampling
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sip.init.BASELINES)
def test_baselines_match_torch_formulas(name):
    w = torch.empty(300, 200)
    sip.baseline_(w, name, generator=torch.Generator().manual_seed(0))
    expected_std = {"default": 1 / math.sqrt(3 * 200), "kaiming_normal": math.sqrt(2 / 200),
                    "kaiming_uniform": math.sqrt(2 / 200), "xavier_normal": math.sqrt(2 / 500),
                    "xavier_uniform": math.sqrt(2 / 500), "lecun_normal": math.sqrt(1 / 200),
                    "spikingjelly": 1 / math.sqrt(3 * 200), "ding": math.sqrt(2) / math.sqrt(200)}[name]
    empirical_std_ok(w, expected_std)
    law = baseline_law(name, 200, 300)
    if law.kind == "uniform":
        assert w.abs().max().item() <= law.bound
    # torch.nn.init's own functions give the same spread
    ref = torch.empty(300, 200)
    {"default": lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)),
     "kaiming_normal": nn.init.kaiming_normal_, "kaiming_uniform": nn.init.kaiming_uniform_,
     "xavier_normal": nn.init.xavier_normal_, "xavier_uniform": nn.init.xavier_uniform_,
     "lecun_normal": lambda t: nn.init.normal_(t, 0, 1 / math.sqrt(200)),
     "spikingjelly": lambda t: nn.init.kaiming_normal_(t, a=math.sqrt(5)),
     "ding": lambda t: nn.init.normal_(t, 0, math.sqrt(2) / math.sqrt(200))}[name](ref)
    assert ref.std().item() == pytest.approx(expected_std, rel=0.05)


def test_same_seed_same_weights_in_every_dtype():
    law = Law("normal", 0.0, 0.1)
    base = sample(law, (64, 32), dtype=torch.float32, generator=torch.Generator().manual_seed(3))
    for dtype in (torch.float16, torch.bfloat16):
        other = sample(law, (64, 32), dtype=dtype, generator=torch.Generator().manual_seed(3))
        assert torch.equal(other, base.to(dtype))
    with pytest.warns(UserWarning, match="zero-element"):
        sip.spike_aware_(torch.empty(0, 3))
    with pytest.raises(sip.InitError, match="at least 2 dimensions"):
        sip.spike_aware_(torch.empty(5))


# ------------------------------------------------------------------------------------------------------
# initialize() on models
# ------------------------------------------------------------------------------------------------------
class Neuron(nn.Module):
    def __init__(self, theta=1.0, beta=0.5):
        super().__init__()
        self.theta, self.beta = theta, beta

    def forward(self, x):
        return atan()(x - self.theta)


@pytest.fixture
def registered():
    sip.register_neuron(Neuron, lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.beta, surrogate=atan(), name="Neuron"))
    yield
    sip.unregister_neuron(Neuron)


def mlp(widths=(100, 300, 300, 10), readout=True):
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), Neuron()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    if not readout:
        layers.append(Neuron())
    return nn.Sequential(*layers)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_initialize_spike_aware_layer_statistics(registered):
    torch.manual_seed(0)
    net = mlp()
    x = torch.rand(64, 100)
    before = state(net)
    report = sip.initialize(net, "spike_aware", x, generator=torch.Generator().manual_seed(0))
    # first layer: measured E[x^2] of the data; second: spikes at the self-consistent rate 1 - Phi(1)
    q = (x.double() ** 2).mean().item()
    empirical_std_ok(net[0].weight, math.sqrt(1.0 / (100 * q)))  # c = 1: sum K^2 over one step is 1
    assert report.layer("0").std == pytest.approx(math.sqrt(1.0 / (100 * q)), rel=1e-9)
    assert report.layer("2").std == pytest.approx(math.sqrt(6.302974 / 300), rel=1e-6)
    assert "measured" in report.layer("0").assumed["q_in"] and "self-consistent" in report.layer("2").assumed["q_in"]
    assert torch.equal(net[4].weight, before["4.weight"])  # the readout feeds no neuron: untouched
    assert all(torch.equal(net[i].bias, before[f"{i}.bias"]) for i in (0, 2, 4))  # biases untouched
    assert "spike_aware" in str(report)
    rows = json.loads(report.to_json())["layers"]
    assert [(row["layer"], row["method"], row["std"]) for row in rows] == \
        [(r.layer, "spike_aware", r.std) for r in report.layers]


def test_initialize_is_atomic_and_validates(registered):
    net = mlp(readout=False)
    x = torch.rand(8, 100)
    before = state(net)
    for kwargs, message in [
        (dict(method="nope"), "unknown method"),
        (dict(method="ikun", sigma_u=1.0), "unknown option"),
        (dict(method="spike_aware", target_rate=0.9), r"\(0, 0.5\)"),
        (dict(method="fluctuation", mu_u=5.0), "not below the threshold"),
        (dict(method="spike_aware", overrides={"zzz": {}}), "matches no planned layer"),
        (dict(method="spike_aware", overrides={"4": {"target_rate": 0.7}}), r"\(0, 0.5\)"),  # fails on the last layer
    ]:
        with pytest.raises(sip.InitError, match=message):
            sip.initialize(net, example_input=x, **kwargs)
        assert all(torch.equal(v, state(net)[k]) for k, v in before.items())
    with pytest.raises(sip.InitError, match="model input"):  # first layer needs data statistics
        sip.initialize(net, "spike_aware")
    with pytest.raises(sip.PlanError, match="no spiking neurons"):
        sip.initialize(nn.Sequential(nn.Linear(3, 3)), "spike_aware", torch.rand(2, 3))


def test_initialize_overrides_skip_and_determinism(registered):
    x = torch.rand(16, 100)
    a, b = mlp(readout=False), mlp(readout=False)
    skipped_before = a[4].weight.clone()
    sip.initialize(a, "spike_aware", x, generator=torch.Generator().manual_seed(7), skip="4",
                   overrides={"2": {"method": "lecun_normal"}})
    rep = sip.initialize(b, "spike_aware", x, generator=torch.Generator().manual_seed(7), skip="4",
                         overrides={"2": {"method": "lecun_normal"}})
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(a[2].weight, b[2].weight)
    assert torch.equal(a[4].weight, skipped_before)
    assert rep.skipped == ["4.weight"] and rep.layer("2").method == "lecun_normal"
    empirical_std_ok(a[2].weight, math.sqrt(1 / 300))
    # under no_grad and with frozen parameters the weights are still written
    c = mlp(readout=False)
    for p in c.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        sip.initialize(c, "spike_aware", x, generator=torch.Generator().manual_seed(7), skip="4",
                       overrides={"2": {"method": "lecun_normal"}})
    assert torch.equal(a[0].weight, c[0].weight) and torch.equal(a[2].weight, c[2].weight)
    assert not any(p.requires_grad for p in c.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_initialize_dtypes_give_the_same_weights(registered, dtype):
    x = torch.rand(16, 100)
    ref = mlp(readout=False)
    sip.initialize(ref, "ikun", x, generator=torch.Generator().manual_seed(5))
    other = mlp(readout=False).to(dtype)
    sip.initialize(other, "ikun", x.to(dtype), generator=torch.Generator().manual_seed(5))
    for p, q in zip(ref.parameters(), other.parameters()):
        if p.dim() > 1:
            if dtype == torch.float64:  # float64 weights come from float64 draws: same law, not the same numbers
                assert q.std().item() == pytest.approx(p.std().item(), rel=0.05)
            else:
                assert torch.equal(p.to(dtype), q)


def test_initialize_fluctuation_with_residual_share(registered):
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.na = nn.Linear(50, 200), Neuron()
            self.b, self.skip, self.nb = nn.Linear(200, 200), nn.Linear(50, 200), Neuron()

        def forward(self, x):
            return self.nb(self.b(self.na(self.a(x))) + self.skip(x))

    net = Res()
    report = sip.initialize(net, "fluctuation", torch.rand(32, 50), generator=torch.Generator().manual_seed(0))
    assert report.layer("b").assumed["variance_share"] == 0.5 and report.layer("skip").assumed["variance_share"] == 0.5
    assert report.layer("a").assumed.get("variance_share") is None


@pytest.mark.snntorch
def test_fluctuation_recurrent_split_on_rleaky():
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(50, 80)
            self.rlif = snn.RLeaky(beta=0.9, linear_features=80)

        def forward(self, x):
            spk, mem = self.rlif.init_rleaky()
            for t in range(x.shape[0]):
                spk, mem = self.rlif(self.fc(x[t]), spk, mem)
            return spk

    net = Net()
    x = (torch.rand(5, 16, 50) < 0.2).float()
    report = sip.initialize(net, "fluctuation", x, generator=torch.Generator().manual_seed(0))
    ff, rec = report.layer("fc"), report.layer("rlif.recurrent.weight")
    assert ff.assumed["variance_share"] == pytest.approx(0.9) and rec.assumed["variance_share"] == pytest.approx(0.1)
    # the shared mean: mu_w = mu_U / ((n_ff + n_rec) p sum K) = 0 here; the variances follow the shares.
    # The feed-forward input is the data (its measured spike rate); the recurrent input is the neuron's own
    # spikes at the self-consistent rate 1 - Phi((theta - mu_U)/sigma_U) = 1 - Phi(1) (theta = 1, defaults).
    p_in = x.double().mean().item()
    p_rec = stats.norm.sf(1.0)
    beta = float(torch.tensor(0.9))  # snnTorch keeps β as a float32 buffer
    k2 = 1 / (1 - beta**2)
    assert (ff.mean, rec.mean) == (0.0, 0.0)
    assert ff.std == pytest.approx(math.sqrt(0.9 / (50 * p_in * k2)), rel=1e-6)
    assert rec.std == pytest.approx(math.sqrt(0.1 / (80 * p_rec * k2)), rel=1e-9)
