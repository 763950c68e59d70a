"""One rule, one implementation: ``initialize`` writes bit for bit what the tensor-level function writes.

For every method and every option, on a model with one weight layer of each framework, the weight that
``initialize(model, method, x, generator=g, **options)`` writes equals the tensor the ``torch.nn.init``-style
function (``ikun_``, ``spike_aware_``, ``fluctuation_``, ``baseline_``) fills, given the same random stream and
the layer's numbers, which the test reads from the framework's own neuron and the input it built:

* the threshold and the leak are the values passed to the framework's constructor; the kernel sums are the
  closed forms of the LIF response K[k] = c β^k (dyadic parameters, so every sum is exact);
* the input has exactly known statistics (entries 0, 1/2 and 1 in known numbers), or is the spikes of a
  hidden neuron, whose probability is the target rate or the self-consistent 1 − Φ((θ − μ)/σ);
* the random stream is the one ``initialize`` documents: one seed per layer, drawn in plan order from the
  generator, seeding that layer's own CPU generator.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from scipy import special

import snn_initplug as sip
from snn_initplug.options import SpikeInitOptions

THETA, BETA, FEATURES, WIDTH, SEED = 1.5, 0.5, 8, 6, 123


def data_batch() -> torch.Tensor:
    """16 × 8 entries: 32 ones and 4 halves, so E[x] = 34/128 and E[x²] = 33/128 exactly."""
    x = torch.zeros(16, FEATURES)
    x[:, :2] = 1.0
    x[:4, 2] = 0.5
    return x


DATA_MEAN, DATA_SECOND_MOMENT = 34 / 128, 33 / 128


# ------------------------------------------------------------------------------------------------------
# One neuron type per framework, with the numbers its constructor was given
# ------------------------------------------------------------------------------------------------------
class Framework:
    name: str
    input_scale: float  # c of u[t] = β u[t-1] + c I[t]

    def neuron(self) -> nn.Module:
        raise NotImplementedError

    def surrogate(self, neuron: nn.Module) -> Callable:
        raise NotImplementedError


class SnnTorch(Framework):
    name, input_scale = "snntorch", 1.0  # snnTorch never scales the input

    def neuron(self):
        import snntorch as snn

        return snn.Leaky(beta=BETA, threshold=THETA, init_hidden=True)

    def surrogate(self, neuron):
        return neuron.spike_grad


class SpikingJelly(Framework):
    name, input_scale = "spikingjelly", 1.0 / 2.0  # LIFNode(tau=2, decay_input=True): β = 1 − 1/τ, c = 1/τ

    def neuron(self):
        from spikingjelly.activation_based import neuron

        return neuron.LIFNode(tau=1.0 / (1.0 - BETA), v_threshold=THETA, decay_input=True)

    def surrogate(self, neuron):
        return neuron.surrogate_function


FRAMEWORKS = [
    pytest.param(SnnTorch(), id="snntorch", marks=pytest.mark.snntorch),
    pytest.param(SpikingJelly(), id="spikingjelly",
                 marks=pytest.mark.spikingjelly),
]


def kernel_sums(c: float, horizon: Any) -> Tuple[float, float]:
    """ΣK, ΣK² of K[k] = c β^k over the horizon: closed forms, exact for β = 1/2."""
    if horizon == "stationary":
        return c / (1 - BETA), c * c / (1 - BETA * BETA)
    steps = 1 if horizon == "single" else horizon
    return sum(c * BETA**k for k in range(steps)), sum((c * BETA**k) ** 2 for k in range(steps))


def upper_tail(z: float) -> float:
    """1 − Φ(z)."""
    return 1.0 - float(special.ndtr(z))


# ------------------------------------------------------------------------------------------------------
# The cases: (method, options, input) -> how the tensor function is called with the layer's numbers
# ------------------------------------------------------------------------------------------------------
Numbers = Dict[str, Any]
Fill = Callable[[torch.Tensor, Numbers, torch.Generator], torch.Tensor]


FORMER = {"mode": "fan_mode", "rate": "target_rate", "horizon": "steps"}  # the deprecated option names


def current(options: Dict[str, Any]) -> Dict[str, Any]:
    """The options under their current names (the reference calls below use only those)."""
    return {FORMER.get(key, key): value for key, value in options.items()}


def ikun(options: Dict[str, Any]) -> Fill:
    options = current(options)
    return lambda w, n, g: sip.ikun_(w, n["surrogate"], **options, generator=g)


def spike_aware(options: Dict[str, Any], spikes: bool = False) -> Fill:
    options = current(options)

    def fill(w, n, g):
        sigma_u = options.get("sigma_u") or (None if "target_rate" in options else THETA)
        if "input_second_moment" in options:
            q = options["input_second_moment"]
        elif not spikes:
            q = DATA_SECOND_MOMENT
        elif "target_rate" in options:
            q = options["target_rate"]
        else:
            q = upper_tail(THETA / sigma_u)
        relay = options.get("relay", 0.0) if spikes else 0.0  # a relay needs spikes from upstream neurons
        horizon = options.get("steps", "single")
        _, k2 = kernel_sums(n["c"], horizon)
        spec = n["spec"]
        dynamics = sip.laws.RelayDynamics(float(spec.beta), horizon, spec.reset, spec.reset_value) \
            if relay and isinstance(horizon, int) and horizon > 1 else None
        return sip.spike_aware_(w, THETA, sigma_u=options.get("sigma_u"), target_rate=options.get("target_rate"),
                                input_second_moment=q, kernel_sq_sum=k2, relay=relay, input_scale=n["c"],
                                relay_dynamics=dynamics, generator=g)
    return fill


def fluctuation(options: Dict[str, Any], spikes: bool = False) -> Fill:
    options = current(options)

    def fill(w, n, g):
        mu_u = options.get("mu_u", 0.0)
        horizon = options.get("steps", "stationary")
        if "input_rate" in options:
            inputs = {"input_rate": options["input_rate"]}
        elif "input_second_moment" in options:
            inputs = {"input_mean": options["input_mean"], "input_second_moment": options["input_second_moment"]}
        elif spikes:
            if "target_rate" in options:
                p = options["target_rate"]
            else:  # the upstream neuron's self-consistent rate at the default σ_U = θ − μ_U (or the given σ_U)
                p = upper_tail((THETA - mu_u) / options.get("sigma_u", THETA - mu_u))
            inputs = {"input_rate": p}
        else:
            inputs = {"input_mean": DATA_MEAN, "input_second_moment": DATA_SECOND_MOMENT}
        return sip.fluctuation_(w, threshold=THETA, kernel_sums=kernel_sums(n["c"], horizon), mu_u=mu_u,
                                sigma_u=options.get("sigma_u"), target_rate=options.get("target_rate"), **inputs,
                                generator=g)
    return fill


def baseline(name: str) -> Fill:
    return lambda w, n, g: sip.baseline_(w, name, threshold=THETA, input_scale=n["c"], generator=g)


def spikeinit(options: Dict[str, Any], spikes: bool = False) -> Fill:
    def fill(w, n, g):
        spec, p = n["spec"], options.get("target_rate", 0.1)
        # a hidden layer reads spikes of neurons at the target; the data batch (entries 0, 1/2, 1) is analog
        inputs = {"input": "spikes", "input_second_moment": p} if spikes else \
            {"input": "static", "input_second_moment": DATA_SECOND_MOMENT}
        numbers = {k: v for k, v in options.items() if k != "surrogate"}
        return sip.spikeinit_(w, **numbers, decay=BETA, input_scale=n["c"], threshold=THETA, reset=spec.reset,
                              reset_value=spec.reset_value, reset_timing=spec.reset_timing, **inputs, generator=g)
    return fill


CASES: List[Tuple[str, str, Dict[str, Any], bool, Fill]] = []


def case(label: str, method: str, options: Dict[str, Any], fill: Fill, spikes: bool = False) -> None:
    CASES.append((label, method, options, spikes, fill))


# the current option names, and (marked "deprecated") one case per former name, which must give the same weights
for opts in [{}, {"variant": "reference"}, {"version": "v1"}, {"version": "v2"}, {"fan_mode": "fan_in"},
             {"fan_mode": "fan_out"}, {"fan_mode": "fan_avg"}, {"fan_mode": "fan_sum"},
             {"distribution": sip.surrogate.Normal(-0.5, 0.7)}, {"distribution": sip.surrogate.Uniform(-2.0, 2.0)},
             {"moment": 2}, {"moment": 2, "mode": "fan_out"}]:  # mode: deprecated
    case(f"ikun{opts}", "ikun", opts, ikun(opts))
for opts in [{}, {"sigma_u": 0.8}, {"target_rate": 0.1}, {"steps": "single"}, {"steps": "stationary"}, {"steps": 3},
             {"input_second_moment": 0.3}, {"input_second_moment": 0.3, "input_mean": 0.1},
             {"recurrent_fraction": 0.5}, {"relay": 0.5}]:
    case(f"spike_aware{opts}", "spike_aware", opts, spike_aware(opts))
for opts in [{}, {"relay": 0.5}, {"relay": 0.5, "rate": 0.1}, {"relay": 0.3, "sigma_u": 1.2, "horizon": "stationary"},
             {"sigma_u": 1.2}, {"relay": 0.8, "steps": 3}]:  # rate, horizon: deprecated
    case(f"spike_aware{opts} on spikes", "spike_aware", opts, spike_aware(opts, spikes=True), spikes=True)
for opts in [{}, {"mu_u": 0.3}, {"sigma_u": 0.7}, {"target_rate": 0.1}, {"mu_u": 0.2, "target_rate": 0.1},
             {"input_rate": 0.2}, {"steps": "single"}, {"horizon": 4}, {"steps": 4},  # horizon: deprecated
             {"input_mean": 0.3, "input_second_moment": 0.4}, {"recurrent_fraction": 0.5}]:
    case(f"fluctuation{opts}", "fluctuation", opts, fluctuation(opts))
for opts in [{}, {"mu_u": 0.3}, {"rate": 0.1}, {"sigma_u": 1.2, "steps": 4}]:  # rate: deprecated
    case(f"fluctuation{opts} on spikes", "fluctuation", opts, fluctuation(opts, spikes=True), spikes=True)
for name in ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
             "spikingjelly", "ding"):
    case(name, name, {}, baseline(name))
case("spikeinit{}", "spikeinit", {}, spikeinit({}))
for opts in [{}, {"target_rate": 0.05, "steps": 3}, {"surrogate": False},
             {"simulate": True, "samples": 4096, "seed": 3}]:
    case(f"spikeinit{opts} on spikes", "spikeinit", opts, spikeinit(opts, spikes=True), spikes=True)


def test_every_method_and_option_is_covered():
    """The cases name every analytic method and every field of its options record."""
    covered: Dict[str, set] = {}
    for _, method, options, _, _ in CASES:
        covered.setdefault(method, set()).update(options)
    assert set(covered) | {"calibrated", "auto"} == set(sip.apply.METHODS)
    records = {"ikun": sip.options.IkunOptions, "spike_aware": sip.options.SpikeAwareOptions,
               "fluctuation": sip.options.FluctuationOptions, "spikeinit": SpikeInitOptions}
    for method, record in records.items():
        assert set(record.__dataclass_fields__) <= covered[method], method


def one_layer_model(framework: Framework, spikes: bool) -> nn.Sequential:
    """Linear → neuron; with ``spikes``, a first Linear → neuron stage in front produces the spikes the
    layer under test reads (the planner sees them as spikes by the autograd graph)."""
    torch.manual_seed(0)
    layers = [nn.Linear(FEATURES, WIDTH), framework.neuron()]
    if spikes:
        layers = [nn.Linear(FEATURES, FEATURES), framework.neuron()] + layers
    return nn.Sequential(*layers)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("label,method,options,spikes,fill", CASES, ids=[c[0] for c in CASES])
def test_initialize_writes_what_the_tensor_function_writes(framework, label, method, options, spikes, fill):
    model = one_layer_model(framework, spikes)
    layer, neuron = model[-2], model[-1]
    x = data_batch()
    former = set(FORMER) & set(options)
    with pytest.warns(DeprecationWarning, match=f"{min(former)}=") if former else contextlib.nullcontext():
        report = sip.initialize(model, method, x, generator=torch.Generator().manual_seed(SEED), **options)
    # initialize's documented stream: one seed per layer, in plan order, from the generator
    seeds = torch.randint(0, 2**62, (len(model) // 2,), generator=torch.Generator().manual_seed(SEED)).tolist()
    assert [row.seed for row in report.layers] == seeds
    seed = seeds[-1]
    numbers = {"surrogate": framework.surrogate(neuron), "c": framework.input_scale, "spec": sip.adapters.neuron_spec(neuron)}
    expected = fill(torch.empty_like(layer.weight), numbers, torch.Generator().manual_seed(seed))
    assert torch.equal(layer.weight, expected), (label, report)


# ------------------------------------------------------------------------------------------------------
# The drift bugs of issue 13, each against a closed form
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fluctuation_default_sigma_is_the_threshold_gap_in_both_paths(framework):
    """At θ = 1.5, μ_U = 0.3 the default σ_U is θ − μ_U = 1.2 through initialize and through the tensor
    function (it was 1 through one and θ − μ_U through the other): σ_w² + μ_w² = σ_U²/(fan_in q ΣK²) with
    μ_w = μ_U/(fan_in m ΣK)."""
    model = one_layer_model(framework, spikes=False)
    report = sip.initialize(model, "fluctuation", data_batch(), mu_u=0.3)
    k1, k2 = kernel_sums(framework.input_scale, "stationary")
    mean = 0.3 / (FEATURES * DATA_MEAN * k1)
    std = (1.2**2 / (FEATURES * DATA_SECOND_MOMENT * k2) - mean**2) ** 0.5
    assert report.layers[0].assumed["sigma_u"] == pytest.approx(1.2, rel=1e-15)
    assert (report.layers[0].mean, report.layers[0].std) == pytest.approx((mean, std), rel=1e-12)
    law = sip.calculate_fluctuation(FEATURES, kernel_sums=(k1, k2), threshold=THETA, mu_u=0.3,
                                    input_mean=DATA_MEAN, input_second_moment=DATA_SECOND_MOMENT)
    assert (law.mean, law.std) == pytest.approx((mean, std), rel=1e-12)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_calibrated_takes_the_start_options_separately(framework):
    """``mode`` is the calibration's; the start's ``mode`` goes in start_options (or an options record), and
    the bare collision is one clear OptionError instead of "mode must be 'auto'..."."""
    x = data_batch()
    model = one_layer_model(framework, spikes=False)
    report = sip.initialize(model, "calibrated", x, start="ikun", start_options={"fan_mode": "fan_out"}, mode="model",
                            max_evaluations=3)
    assert report.layers[0].assumed["fan"] == f"fan_out={WIDTH}"
    assert report.calibration.mode == "model"
    twin = one_layer_model(framework, spikes=False)
    again = sip.initialize(twin, "calibrated", x, start=sip.options.IkunOptions(fan_mode="fan_out"), mode="model",
                           max_evaluations=3, generator=torch.Generator().manual_seed(report.layers[0].seed))
    assert again.layers[0].assumed["fan"] == f"fan_out={WIDTH}"
    with pytest.raises(sip.OptionError, match=r"start_options=\{'mode': 'fan_out'\}"):
        sip.initialize(one_layer_model(framework, spikes=False), "calibrated", x, start="ikun", mode="fan_out")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_calibrated_fluctuation_start_uses_the_steps_horizon(framework):
    """``start="fluctuation", steps=4``: the start's kernel sums are the 4-step sums (ΣK = c(1 − β⁴)/(1 − β)),
    not the stationary c/(1 − β)."""
    model = one_layer_model(framework, spikes=False)
    report = sip.initialize(model, "calibrated", data_batch(), start="fluctuation", steps=4, max_evaluations=3)
    c = framework.input_scale
    assert report.layers[0].assumed["sum_K"] == c * (1 - BETA**4) / (1 - BETA)
    assert report.settings["options"]["start_options"] == {"steps": 4}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_calibrated_report_says_calibrated_and_replays(framework, tmp_path):
    """The method column says ``calibrated (start spike_aware)``; the JSON report replays bit for bit."""
    x = data_batch()
    model = one_layer_model(framework, spikes=False)
    report = sip.initialize(model, "calibrated", x, max_evaluations=6, generator=torch.Generator().manual_seed(3))
    assert report.method == "calibrated (start spike_aware)"
    assert [row.method for row in report.layers] == ["calibrated (start spike_aware)"]
    assert "calibrated (start spike_aware)" in str(report).splitlines()[2]
    report.save(tmp_path / "report.json")
    twin = one_layer_model(framework, spikes=False)
    replayed = sip.reinitialize(twin, tmp_path / "report.json", x)
    assert replayed.layers[0].method == "calibrated (start spike_aware)"
    assert torch.equal(twin[0].weight, model[0].weight)
