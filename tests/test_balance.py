"""balance_gradients: the membrane factor at which the weight-gradient norms stop vanishing or exploding with
depth, checked against gradients computed here with plain autograd (not the package's measurement)."""

import math

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.planning import reset_neuron

DEPTH, WIDTH, STEPS = 24, 48, 4


def _snntorch_stack(depth=DEPTH, width=WIDTH):
    import snntorch as snn

    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width),
                                                             snn.Leaky(beta=0.9, init_hidden=True))])


def _spikes(batch=32, width=WIDTH, seed=1):
    return (torch.rand(batch, width, generator=torch.Generator().manual_seed(seed)) < 0.2).float()


def _norms(net, x, steps=STEPS, multistep=False):
    """||dL/dW|| per Linear (input to output), L = <output summed over the steps, R>, R standard normal:
    written here with autograd alone, from a fresh state."""
    for m in net.modules():
        reset_neuron(m)
    out = net(torch.stack([x] * steps)) if multistep else sum(net(x) for _ in range(steps))
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad((out * r).sum(), weights)
    for m in net.modules():
        reset_neuron(m)
    return [float(g.norm()) for g in grads]


def _slope(norms):
    """Least-squares slope of log-norm over the layer index (numpy's fit, not the package's)."""
    import numpy as np

    return float(np.polyfit(np.arange(len(norms)), np.log(norms), 1)[0])


@pytest.mark.snntorch
def test_snntorch_balanced_factor_is_where_the_gradients_turn_from_vanishing_to_exploding():
    torch.manual_seed(0)
    net, x = _snntorch_stack(), _spikes()
    sip.initialize(net, "calibrated", x, steps=STEPS, target_rate=0.15)
    sip.scale_membrane(net, 0.5, x, steps=STEPS)  # a wide surrogate: the gradient fades toward the input
    before = _norms(net, x)
    spikes_before = sum(net(x) for _ in range(STEPS)).detach()
    reference = _snntorch_stack()
    reference.load_state_dict(net.state_dict())
    balance = sip.balance_gradients(net, x, steps=STEPS)
    after = _norms(net, x)
    assert _slope(before) > 0 and max(before) / min(before) > 10
    assert max(after) / min(after) < 10  # the target: the norms within 10x over the layers
    assert abs(_slope(after)) * (DEPTH - 1) < math.log(2)
    assert balance.factor > 1  # vanishing: more backward gain, a narrower surrogate relative to the membrane
    # the factor is the crossing: half of it still vanishes, twice it explodes (independent scalings of a copy)
    for factor, vanishes in ((balance.factor / 2, True), (balance.factor * 2, False)):
        other = _snntorch_stack()
        other.load_state_dict(reference.state_dict())
        sip.scale_membrane(other, factor, x, steps=STEPS)
        assert (_slope(_norms(other, x)) > 0) == vanishes
    # the same spikes: the sum over the steps of the last layer's spikes is unchanged
    for m in net.modules():
        reset_neuron(m)
    torch.testing.assert_close(sum(net(x) for _ in range(STEPS)).detach(), spikes_before)
    # every weight, bias and threshold is the reference's times the factor
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q * balance.factor, msg=name)
    assert float(net[1].threshold) == pytest.approx(0.5 * balance.factor)
    assert balance.ratio_before > 10 > balance.ratio_after  # its own measurement (another random projection) too
    assert "membrane scaled by" in str(balance)


@pytest.mark.spikingjelly
def test_spikingjelly_multistep_stack_is_balanced():
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(DEPTH) for m in (layer.Linear(WIDTH, WIDTH, step_mode="m"),
                                                            neuron.LIFNode(tau=2.0, step_mode="m"))])
    x = torch.stack([_spikes()] * STEPS)
    sip.initialize(net, "calibrated", x, target_rate=0.15)
    sip.scale_membrane(net, 0.5, x)
    before = _norms(net, x[0], multistep=True)
    balance = sip.balance_gradients(net, x)
    after = _norms(net, x[0], multistep=True)
    assert max(before) / min(before) > 10
    assert max(after) / min(after) < 10
    assert balance.factor > 1 and balance.ratio_after < 10


def test_gradient_slope_closed_form():
    assert sip.balance.gradient_slope([3.0 * 2.0**i for i in range(6)]) == pytest.approx(math.log(2))
    assert sip.balance.gradient_slope([5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert sip.balance.gradient_slope([0.0, 1e-3, 1.0]) > 0  # underflow to 0 still reads as vanishing
    assert sip.balance.gradient_slope([math.inf, 1.0, 1e-3]) < 0  # overflow still reads as exploding
    with pytest.raises(sip.InitError):
        sip.balance.gradient_slope([1.0])


@pytest.mark.snntorch
@pytest.mark.parametrize("call, error, words", [
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, bounds=(0.99, 1.01)), sip.InitError,
     "no membrane scale within bounds"),
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, bounds=(2, 4)), sip.OptionError, "0 < low < 1 < high"),
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, bounds=5), sip.OptionError, "two numbers"),
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, loss_fn=lambda out: out[0]), sip.InitError,
     "scalar tensor"),
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, loss_fn=lambda out: 1 / 0), ZeroDivisionError,
     "division by zero"),
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, skip="*"), sip.PlanError, "no neuron to scale"),
    # gradients that overflow (inf, and NaN where inf meets 0) read as exploding at every factor, not as a crash
    (lambda n, x: sip.balance_gradients(n, x, steps=STEPS, loss_fn=lambda out: sum(o.sum() for o in out) * 3e38),
     sip.InitError, "explode toward the input at every factor from 1 to 0.015625"),
    (lambda n, x: sip.balance_gradients(n, None), sip.InitError, "needs a real batch"),
])
def test_refusals_leave_the_model_unchanged(call, error, words):
    torch.manual_seed(0)
    net, x = _snntorch_stack(depth=6, width=16), _spikes(width=16)
    sip.initialize(net, "calibrated", x, steps=STEPS, target_rate=0.15)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    thresholds = [float(m.threshold) for m in net if hasattr(m, "threshold")]
    with pytest.raises(error, match=words):
        call(net, x)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [float(m.threshold) for m in net if hasattr(m, "threshold")] == thresholds


@pytest.mark.snntorch
def test_one_neuron_layer_is_refused():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(8, 8), snn.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(sip.InitError, match="at least 2 neuron layers"):
        sip.balance_gradients(net, torch.rand(4, 8), steps=2)


@pytest.mark.snntorch
def test_layers_with_a_silent_input_are_named_and_left_out_of_the_fit():
    """A silent input makes a weight gradient 0 at every scale: such a layer says nothing about the backward
    gain and is left out of the fit. Silencing a deep layer (its weights and bias 0) also leaves the gradient to
    pass through neurons at rest, far from θ, whose gain falls as the factor grows: no factor balances that, and
    the error names the silent layers. Silencing the first leaves one layer with input: refused. The model is
    unchanged in both cases."""
    torch.manual_seed(0)
    net, x = _snntorch_stack(depth=6, width=16), _spikes(width=16)
    sip.initialize(net, "calibrated", x, steps=STEPS, target_rate=0.15)
    for index, words in ((4, "the layers feeding 7, 9, 11 receive no spikes"), (0, "receive no spikes on this batch, so")):
        with torch.no_grad():
            net[index].weight.zero_()
            net[index].bias.zero_()
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        with pytest.raises(sip.InitError, match=words):
            sip.balance_gradients(net, x, steps=STEPS)
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_the_factor_search_stops_within_its_passes_however_wide_the_bounds():
    """Issue 29: bounds=(1e-300, 1e300) on gradients that vanish at every factor ran 68 passes (the docstring
    says 24); the bracketing counts toward the 24 and the search gives up, and a factor where every gradient
    underflowed to 0 (no slope: NaN) is never returned as balanced."""
    from snn_initplug.balance import BALANCE_EVALUATIONS, _balanced_factor

    calls = []

    def vanishing(factor):
        calls.append(factor)
        return 1.0  # the norms grow toward the output at every factor

    assert _balanced_factor(vanishing, 1e-300, 1e300, 6) is None
    assert len(calls) == BALANCE_EVALUATIONS == 24

    def gone_beyond_100(factor):
        return math.nan if factor > 100 else 1.0

    assert _balanced_factor(gone_beyond_100, 1e-300, 1e300, 6) is None
