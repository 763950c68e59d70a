"""NeuronSpec: validation, and kernel sums against an independent simulation of the canonical recurrence."""
import math

import numpy as np
import pytest
import torch

import snn_initplug as sip
from snn_initplug import NeuronSpec, NeuronSpecError


def simulate_response(beta, c, alpha=None, steps=2000):
    """Drive u[t] = beta u[t-1] + c i[t], i[t] = alpha i[t-1] + I[t] with a unit impulse; no closed forms."""
    u = i = 0.0
    out = []
    for t in range(steps):
        x = 1.0 if t == 0 else 0.0
        i = (alpha * i + x) if alpha is not None else x
        u = beta * u + c * i
        out.append(u)
    return out


@pytest.mark.parametrize(
    "beta,c,alpha",
    [(0.5, 1.0, None), (0.9, 1.0, None), (0.5, 0.5, None), (0.95, 0.05, None), (0.9, 1.0, 0.8), (0.8, 1.0, 0.9), (0.7, 2.0, 0.7), (0.0, 1.0, None)],
)
def test_kernel_sums_closed_form_match_simulation(beta, c, alpha):
    spec = NeuronSpec(threshold=1.0, beta=beta, input_scale=c, synaptic_decay=alpha)
    k = simulate_response(beta, c, alpha)
    sum_k, sum_k2 = spec.kernel_sums()
    assert sum_k == pytest.approx(sum(k), rel=1e-9)
    assert sum_k2 == pytest.approx(sum(v * v for v in k), rel=1e-9)
    # finite horizon: explicit response
    steps = 7
    finite = spec.kernel_sums(steps)
    assert finite[0] == pytest.approx(sum(k[:steps]), rel=1e-12)
    assert finite[1] == pytest.approx(sum(v * v for v in k[:steps]), rel=1e-12)
    assert spec.response(steps).tolist() == pytest.approx(k[:steps], rel=1e-12)


def test_spikingjelly_lif_kernel_sums_from_tau():
    # reference-spike-init.md: decay_input=True -> (1, 1/(2 tau - 1)); False -> (tau, tau^2/(2 tau - 1))
    for tau in (2.0, 5.0, 20.0):
        s_true = NeuronSpec.from_tau(tau, decay_input=True, threshold=1.0).kernel_sums()
        s_false = NeuronSpec.from_tau(tau, decay_input=False, threshold=1.0).kernel_sums()
        assert s_true == pytest.approx((1.0, 1 / (2 * tau - 1)), rel=1e-12)
        assert s_false == pytest.approx((tau, tau * tau / (2 * tau - 1)), rel=1e-12)


def test_if_neuron_needs_a_horizon():
    spec = NeuronSpec(threshold=1.0, beta=1.0, name="IFNode")
    with pytest.raises(NeuronSpecError, match="IFNode.*no leak.*steps=T"):
        spec.kernel_sums()
    assert spec.kernel_sums(4) == (4.0, 4.0)


def test_per_neuron_parameters_give_per_neuron_sums():
    beta = torch.tensor([0.2, 0.5, 0.9])
    spec = NeuronSpec(threshold=torch.tensor([1.0, 1.5, 2.0]), beta=beta, shape=(3,))
    sum_k, sum_k2 = spec.kernel_sums()
    assert torch.allclose(sum_k, 1 / (1 - beta.double()))
    assert torch.allclose(sum_k2, 1 / (1 - beta.double() ** 2))


def test_measured_impulse_response_is_used():
    # A neuron outside the LIF family: a two-compartment response recorded by simulation.
    state = {"a": 0.0, "b": 0.0}

    def step(x):
        state["a"] = 0.6 * state["a"] + float(x)
        state["b"] = 0.7 * state["b"] + 0.5 * state["a"]
        return torch.tensor(state["b"] - 0.1 * state["a"])

    response = sip.neuron.simulate_impulse_response(step)
    spec = NeuronSpec(threshold=1.0, beta=0.7, impulse_response=response)
    # closed form: a[k] = 0.6^k, b[k] = 0.5 (0.7^(k+1) - 0.6^(k+1)) / (0.7 - 0.6), K[k] = b[k] - 0.1 a[k];
    # ΣK = 0.5 / ((1 - 0.6)(1 - 0.7)) - 0.1 / (1 - 0.6), ΣK² summed in float64 far past the decay.
    k = np.arange(4000, dtype=np.float64)
    kernel = 0.5 * (0.7 ** (k + 1) - 0.6 ** (k + 1)) / 0.1 - 0.1 * 0.6**k
    assert spec.kernel_sums() == pytest.approx((0.5 / (0.4 * 0.3) - 0.1 / 0.4, float(np.sum(kernel**2))), rel=1e-6)
    assert response[:5].tolist() == pytest.approx(kernel[:5].tolist(), rel=1e-6)  # recorded in float32
    assert len(response) < 200  # it stopped once decayed
    state.update(a=0.0, b=0.0)
    assert sip.neuron.simulate_impulse_response(step, steps=5).shape == (5,)


def test_simulate_impulse_response_refuses_a_non_decaying_neuron():
    total = {"u": 0.0}

    def integrate(x):
        total["u"] += float(x)
        return torch.tensor(total["u"])

    with pytest.raises(NeuronSpecError, match="did not decay"):
        sip.neuron.simulate_impulse_response(integrate, max_steps=100)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"threshold": 0.0}, "threshold must be > 0"),
        ({"threshold": -1.0}, "threshold must be > 0"),
        ({"threshold": float("nan")}, "threshold must be finite"),
        ({"threshold": float("inf")}, "threshold must be finite"),
        ({"threshold": 1.0, "beta": 1.2}, r"beta must lie in \[0, 1\]"),
        ({"threshold": 1.0, "beta": -0.1}, r"beta must lie in \[0, 1\]"),
        ({"threshold": 1.0, "beta": torch.tensor([0.5, float("nan")])}, "beta must be finite"),
        ({"threshold": 1.0, "input_scale": 0.0}, "input_scale must be > 0"),
        ({"threshold": 1.0, "reset": "soft"}, "reset must be one of"),
        ({"threshold": 1.0, "synaptic_decay": 1.0}, r"synaptic_decay must lie in \[0, 1\)"),
        ({"threshold": 1.0, "surrogate": 3.0}, "surrogate must be callable"),
        ({"threshold": "1"}, "threshold must be a number or a tensor"),
        ({"threshold": torch.ones(3), "beta": torch.full((4,), 0.5)}, "do not broadcast together"),
        ({"threshold": torch.ones(5), "shape": (3,)}, r"threshold has shape \(5,\).*\(3,\)"),
        ({"threshold": 1.0, "beta": torch.full((2, 1), 0.5), "shape": (8,)}, "beta has shape"),
        ({"threshold": torch.ones(2, device="meta")}, "real tensor with data"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(NeuronSpecError, match=message):
        NeuronSpec(**kwargs)


def test_spec_is_immutable_and_does_not_alias_tensors():
    theta = torch.tensor([1.0, 2.0])
    spec = NeuronSpec(threshold=theta)
    theta[0] = 5.0
    assert spec.threshold[0].item() == 1.0
    with pytest.raises(Exception):
        spec.beta = 0.3  # frozen
    changed = spec.with_(beta=0.25)
    assert changed.beta == 0.25 and spec.beta == 1.0
    with pytest.raises(NeuronSpecError):
        spec.with_(beta=2.0)


def test_surrogate_description_is_read():
    class Fast(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, slope=3.0):
            ctx.save_for_backward(x)
            ctx.slope = slope
            return (x > 0).to(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g / (ctx.slope * x.abs() + 1) ** 2, None

    def make(slope):
        def inner(x):
            return Fast.apply(x, slope)

        return inner

    spec = NeuronSpec(threshold=1.0, surrogate=make(4.0))
    assert spec.surrogate_description == ("make", {"slope": 4.0})
    assert math.isclose(sip.surrogate_moments(spec.surrogate).m1, (1 - 1 / 5) / 4, rel_tol=1e-9)
