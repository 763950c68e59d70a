"""A neuron whose input reaches its membrane a step late (snnTorch's ``Alpha``: K[0] = 0): the one-step kernel
horizon has nothing to scale, so the spike-aware and fluctuation laws take the stationary kernel sums (with a
note), and no relay is built (no one-step jump can hand a spike on). The sums are checked against the
framework's own neuron, driven by a unit input at step 0 with a threshold it never reaches."""
import pytest
import torch
import torch.nn as nn

import snn_initplug as sip

snn = pytest.importorskip("snntorch")
pytestmark = pytest.mark.snntorch


def alpha_response(alpha: float, beta: float, steps: int) -> torch.Tensor:
    """K[k]: the membrane of snnTorch's Alpha at step k after a unit input at step 0 (no spike, no reset)."""
    neuron = snn.Alpha(alpha=alpha, beta=beta, threshold=1e9)
    syn_exc, syn_inh, mem = neuron.init_alpha()
    response = []
    for t in range(steps):
        x = torch.tensor([1.0 if t == 0 else 0.0])
        _, syn_exc, syn_inh, mem = neuron(x, syn_exc, syn_inh, mem)
        response.append(float(mem))
    return torch.tensor(response, dtype=torch.float64)


def alpha_chain(depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers, width = [], 8
    for _ in range(depth):
        layers += [nn.Linear(width, 16), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True)]
        width = 16
    return nn.Sequential(*layers)


@pytest.mark.parametrize("method", ["spike_aware", "fluctuation"])
def test_a_late_input_takes_the_stationary_kernel_sums_with_a_note(method):
    """steps='single' (spike_aware's default; fluctuation's is 'stationary' already, named here)."""
    response = alpha_response(0.9, 0.8, 400)
    assert response[0] == 0 and response[1] > 0  # the premise: nothing at step 0
    report = sip.initialize(alpha_chain(2), torch.rand(16, 8), method, steps="single")
    first = report.layers[0]
    k2 = first.assumed["sum_K2"]
    assert k2 == pytest.approx(float((response ** 2).sum()), rel=1e-6)
    if method == "fluctuation":
        assert first.assumed["sum_K"] == pytest.approx(float(response.sum()), rel=1e-6)
    assert all(any("only after the first step (K[0] = 0)" in note for note in layer.notes) for layer in report.layers)


def test_no_relay_for_a_late_input():
    model = alpha_chain(3)
    before = [model[i].weight.detach().clone() for i in (2, 4)]
    report = sip.initialize(model, torch.rand(16, 8), "spike_aware", relay=0.9)
    assert all(any("relay: not applied" in note and "a step late" in note for note in layer.notes)
               for layer in report.layers[1:])  # the first reads the data: no relay anyway
    assert all("relay" not in layer.assumed for layer in report.layers)
    assert all(not torch.equal(model[i].weight, b) for i, b in zip((2, 4), before))  # initialized, no error


@pytest.mark.parametrize("depth", [3, 25])
def test_the_one_call_builds_no_relay_for_a_late_input(depth):
    """The one call's relay (ρ = 0.9 from 2 layers, the copy relay beyond 20) needs a membrane that takes the
    input in the step it arrives: an Alpha chain gets the calibration without one, and the first line says why."""
    report = sip.initialize(alpha_chain(depth), torch.rand(16, 8), steps=4)
    assert report.recipe.startswith(f"{depth}-layer plain chain (inputs reach the membrane a step late: no relay)")
    assert "relay" not in report.recipe.split("): ", 1)[1]
