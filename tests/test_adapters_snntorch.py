"""snnTorch adapters, checked against snnTorch itself.

The reference is always the real module: it is driven with a unit impulse while it cannot spike (threshold
far out of reach), and its recorded membrane must equal ``spec.response(T)`` and its sums
``spec.kernel_sums(T)``. Modules are converted to float64 first so that the comparison can be tight.
"""
import math

import pytest
import torch
import torch.nn as nn

snn = pytest.importorskip("snntorch")

from snntorch import surrogate  # noqa: E402

from snn_initplug.adapters import (  # noqa: E402
    UnsupportedNeuronError,
    find_adapter,
    internal_weights,
    neuron_spec,
)
from snn_initplug.neuron import NeuronSpec  # noqa: E402

pytestmark = pytest.mark.snntorch

T = 60
HIGH = 1e9  # a threshold no unit impulse reaches


@pytest.fixture(autouse=True)
def _forget_our_neurons():
    """snnTorch keeps every neuron ever built in the class-global ``SpikingNeuron.instances`` and
    ``Leaky.reset_hidden`` (``snntorch.utils.reset``) walks all of them; a ``DeltaLeaky`` there (its ``mem``
    is None) or a neuron we took apart would break later tests. Drop the ones built here."""
    before = list(snn.SpikingNeuron.instances)
    yield
    snn.SpikingNeuron.instances[:] = before


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def record_membrane(module, inputs):
    """Run the module one step per row of ``inputs`` from a zero state; return the membrane after each."""
    module.reset_mem()
    trace = []
    with torch.no_grad():
        for x in inputs:
            module(x)
            trace.append(module.mem.detach().clone())
    return torch.stack(trace).to(torch.float64)


def impulse(shape=(), steps=T):
    x = torch.zeros((steps,) + tuple(shape), dtype=torch.float64)
    x[0] = 1.0
    return x


def assert_matches_framework(module, shape=(), steps=T):
    """spec.response and spec.kernel_sums against the module's own membrane trace."""
    spec = neuron_spec(module)
    dtype = module.threshold.dtype
    trace = record_membrane(module, impulse(shape, steps).to(dtype))
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    response = spec.response(steps)
    # a shared parameter gives [T]; the layer is [T, *shape]: align the neuron axes on the right
    response = response.reshape((steps,) + (1,) * (trace.dim() - response.dim()) + response.shape[1:])
    torch.testing.assert_close(response.expand_as(trace), trace, **tol)
    total, square = spec.kernel_sums(steps)
    torch.testing.assert_close(torch.as_tensor(total, dtype=torch.float64).expand(shape), trace.sum(0), **tol)
    torch.testing.assert_close(torch.as_tensor(square, dtype=torch.float64).expand(shape), (trace**2).sum(0), **tol)
    return spec


def values(x):
    return torch.as_tensor(x, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# impulse responses against the framework
# ------------------------------------------------------------------------------------------------
# RLeaky/RSynaptic with a Linear recurrent layer cannot run in float64: the spike function returns float32
# spikes, which then meet the float64 weights. Those two stay in float32.
def _rleaky_linear():
    m = snn.RLeaky(beta=0.8, linear_features=3, threshold=HIGH, reset_mechanism="none")
    with torch.no_grad():
        m.recurrent.bias.zero_()  # recurrent(0) = bias would be a constant extra input, not the neuron's response
    return m


def _rsynaptic_linear():
    m = snn.RSynaptic(alpha=0.6, beta=0.8, linear_features=3, threshold=HIGH, reset_mechanism="none")
    with torch.no_grad():
        m.recurrent.bias.zero_()
    return m


CASES = {
    "leaky": (lambda: snn.Leaky(beta=0.9, threshold=HIGH, reset_mechanism="none"), ()),
    "leaky-subtract-unreached": (lambda: snn.Leaky(beta=0.7, threshold=HIGH), ()),
    "leaky-per-neuron": (lambda: snn.Leaky(beta=torch.tensor([0.2, 0.5, 0.95]), threshold=HIGH), (3,)),
    "leaky-learned-clamped": (
        lambda: snn.Leaky(beta=torch.tensor([1.3, -0.2, 0.6]), learn_beta=True, threshold=HIGH, reset_mechanism="none"),
        (3,),
    ),
    "leaky-channel": (lambda: snn.Leaky(beta=torch.tensor([0.3, 0.9]).reshape(2, 1, 1), threshold=HIGH), (2, 3, 3)),
    "synaptic": (lambda: snn.Synaptic(alpha=0.6, beta=0.9, threshold=HIGH, reset_mechanism="none"), ()),
    "synaptic-equal": (lambda: snn.Synaptic(alpha=0.8, beta=0.8, threshold=HIGH), ()),
    "synaptic-per-neuron": (
        lambda: snn.Synaptic(alpha=torch.tensor([0.1, 0.5, 0.9]), beta=torch.tensor([0.9, 0.5, -0.3]), threshold=HIGH),
        (3,),
    ),
    "synaptic-alpha-clamped-to-1": (
        lambda: snn.Synaptic(alpha=torch.tensor([1.4, 0.5]), beta=0.7, learn_alpha=True, threshold=HIGH),
        (2,),
    ),
    "alpha": (lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=HIGH), ()),
    "alpha-subtract": (lambda: snn.Alpha(alpha=0.7, beta=0.2, threshold=HIGH, reset_mechanism="subtract"), ()),
    "alpha-per-neuron": (lambda: snn.Alpha(alpha=torch.tensor([0.9, 0.6]), beta=torch.tensor([0.5, 0.1]), threshold=HIGH), (2,)),
    "lapicque-beta": (lambda: snn.Lapicque(beta=0.9, threshold=HIGH), ()),
    "lapicque-RC": (lambda: snn.Lapicque(R=2.0, C=5.0, time_step=0.5, threshold=HIGH), ()),
    "rleaky-linear": (_rleaky_linear, (3,)),
    "rleaky-one-to-one": (lambda: snn.RLeaky(beta=0.85, all_to_all=False, V=0.5, threshold=HIGH), (3,)),
    "rsynaptic-linear": (_rsynaptic_linear, (3,)),
    "rsynaptic-one-to-one": (lambda: snn.RSynaptic(alpha=0.5, beta=0.9, all_to_all=False, V=2.0, threshold=HIGH), ()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_impulse_response_matches_the_module(case):
    build, shape = CASES[case]
    m = build()
    assert_matches_framework(m if case.endswith("-linear") else m.double(), shape)


def test_alpha_response_is_delayed_and_measured():
    m = snn.Alpha(alpha=0.9, beta=0.6, threshold=HIGH).double()
    spec = neuron_spec(m)
    assert spec.impulse_response is not None
    assert spec.response(1)[0] == 0  # K[0] = 0: the membrane answers one step late
    # the canonical synaptic form with alpha and beta, shifted by one step, has the same infinite sums
    canonical = NeuronSpec(threshold=1.0, beta=spec.beta, synaptic_decay=spec.synaptic_decay, input_scale=spec.input_scale)
    for got, want in zip(spec.kernel_sums(), canonical.kernel_sums()):
        assert got == pytest.approx(want, rel=1e-8)
    torch.testing.assert_close(spec.response(T)[1:], canonical.response(T - 1), rtol=1e-9, atol=1e-12)


def test_alpha_measurement_leaves_the_module_alone():
    m = snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5)
    x = torch.rand(4, 3, requires_grad=True)
    for _ in range(3):
        m(x)  # leaves non-leaf state tensors behind, as training does
    before = {k: getattr(m, k).detach().clone() for k in ("syn_exc", "syn_inh", "mem", "threshold")}
    reset, spike_grad = m.reset, m.spike_grad
    neuron_spec(m)
    for k, v in before.items():
        torch.testing.assert_close(getattr(m, k).detach(), v, rtol=0, atol=0)
    assert m.reset is reset and m.spike_grad is spike_grad
    assert m.state_function.__self__ is m


def test_alpha_with_alpha_1_keeps_a_finite_horizon():
    m = snn.Alpha(alpha=1.0, beta=0.5, threshold=HIGH, reset_mechanism="subtract").double()
    spec = assert_matches_framework(m)
    with pytest.raises(ValueError, match="not decayed"):
        spec.kernel_sums()


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------
def test_beta_clamped_as_forward_does():
    m = snn.Leaky(beta=torch.tensor([1.5, -0.5, 0.25]), learn_beta=True)
    spec = neuron_spec(m)
    torch.testing.assert_close(spec.beta, m.beta.detach().double().clamp(0, 1))
    assert spec.shape == (3,)
    assert isinstance(m.beta, nn.Parameter)


def test_scalar_values_leave_the_shape_unset():
    spec = neuron_spec(snn.Leaky(beta=0.9))
    assert spec.shape is None
    assert spec.beta == pytest.approx(0.9, rel=1e-6)
    assert spec.threshold == 1.0 and spec.input_scale == 1.0 and spec.synaptic_decay is None


def test_per_neuron_threshold():
    threshold = torch.tensor([0.5, 1.0, 2.0, 4.0])
    m = snn.Leaky(beta=0.9, threshold=threshold, learn_threshold=True)
    with torch.no_grad():
        m.threshold.mul_(1.5)  # a trained threshold: the spec reads the live value
    spec = neuron_spec(m)
    torch.testing.assert_close(spec.threshold, m.threshold.detach().double())
    assert spec.shape == (4,)


def test_synaptic_alpha_clamped():
    m = snn.Synaptic(alpha=torch.tensor([-0.3, 0.4]), beta=0.9, learn_alpha=True)
    spec = neuron_spec(m)
    torch.testing.assert_close(spec.synaptic_decay, values([0.0, 0.4]), rtol=1e-6, atol=0)
    assert spec.input_scale == 1.0


def test_lapicque_uses_its_real_decay_and_gain():
    beta = 0.9
    spec = neuron_spec(snn.Lapicque(beta=beta))
    assert spec.beta == pytest.approx(1 + math.log(beta), rel=1e-6)  # not beta: 0.8946
    assert spec.input_scale == pytest.approx(math.log(1 / beta), rel=1e-6)

    m = snn.Lapicque(R=2.0, C=5.0, time_step=0.5)
    spec = neuron_spec(m)
    r, c, dt = 2.0, 5.0, 0.5
    assert spec.beta == pytest.approx(1 - dt / (r * c))
    assert spec.input_scale == pytest.approx(r * dt / (r * c))


def test_lapicque_without_R_and_C_is_reported():
    m = snn.Lapicque(beta=0.9, R=1.0, C=1.0)  # snnTorch registers no R/C buffers for this combination
    with pytest.raises(ValueError, match="R/C"):
        neuron_spec(m)


def test_graded_spikes_factor_is_the_spike_scale():
    m = snn.Leaky(beta=0.9, graded_spikes_factor=torch.tensor([0.5, 2.0]), learn_graded_spikes_factor=True)
    spec = neuron_spec(m)
    torch.testing.assert_close(spec.spike_scale, values([0.5, 2.0]))
    assert spec.shape == (2,)


# ------------------------------------------------------------------------------------------------
# reset
# ------------------------------------------------------------------------------------------------
def simulate_spec(spec, inputs):
    """The canonical update of a spec with its reset (delayed as snnTorch does), for a Leaky neuron."""
    u = torch.zeros_like(inputs[0])
    out = []
    for x in inputs:
        fired = (u > spec.threshold).to(u.dtype)
        if spec.reset == "subtract":
            u = spec.beta * u + spec.input_scale * x - fired * spec.threshold
        elif spec.reset == "hard":
            u = spec.beta * u * (1 - fired) + spec.input_scale * x + fired * spec.reset_value
        else:
            u = spec.beta * u + spec.input_scale * x
        out.append(u)
    return torch.stack(out)


@pytest.mark.parametrize(
    "built,changed,expected",
    [
        ("subtract", None, "subtract"),
        ("zero", None, "hard"),
        ("none", None, "none"),
        ("subtract", "zero", "subtract"),  # setting reset_mechanism later does not change the dynamics
        ("zero", "none", "hard"),
        ("none", "subtract", "none"),
    ],
)
def test_reset_follows_the_behaviour(built, changed, expected):
    m = snn.Leaky(beta=0.8, threshold=1.0, reset_mechanism=built).double()
    if changed is not None:
        m.reset_mechanism = changed
        assert m.reset_mechanism == changed
    spec = neuron_spec(m)
    assert spec.reset == expected and spec.reset_value == 0.0
    inputs = torch.rand(40, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    torch.testing.assert_close(simulate_spec(spec, inputs), record_membrane(m, inputs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("built,changed,expected", [("subtract", "zero", "hard"), ("zero", "subtract", "subtract")])
def test_reset_changed_later_with_immediate_reset(built, changed, expected):
    # reset_delay=False resets right after the spike by reset_mechanism_val, which the setter does update
    m = snn.Leaky(beta=0.5, reset_mechanism=built, reset_delay=False).double()
    m.reset_mechanism = changed
    assert neuron_spec(m).reset == expected
    fresh = snn.Leaky(beta=0.5, reset_mechanism=changed, reset_delay=False).double()
    inputs = torch.rand(40, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.6  # U < 2θ
    spiked = record_membrane(m, inputs)
    torch.testing.assert_close(spiked, record_membrane(fresh, inputs), rtol=0, atol=0)
    never_reset = snn.Leaky(beta=0.5, reset_mechanism="none").double()
    assert not torch.equal(spiked, record_membrane(never_reset, inputs))  # the neurons did spike and reset


@pytest.mark.parametrize("mechanism,expected", [("subtract", "subtract"), ("zero", "hard"), ("none", "none")])
def test_reset_without_state_function_falls_back(mechanism, expected):
    # an older layout without the bound state_function: reset_mechanism_val decides
    m = snn.Leaky(beta=0.8)
    del m.state_function
    m.reset_mechanism = mechanism
    assert neuron_spec(m).reset == expected
    del m.reset_mechanism_val
    assert neuron_spec(m).reset == expected


@pytest.mark.parametrize("cls", ["Synaptic", "Alpha", "Lapicque"])
@pytest.mark.parametrize("mechanism,expected", [("subtract", "subtract"), ("zero", "hard"), ("none", "none")])
def test_reset_of_other_neurons(cls, mechanism, expected):
    kwargs = {"Synaptic": dict(alpha=0.5, beta=0.9), "Alpha": dict(alpha=0.9, beta=0.5), "Lapicque": dict(beta=0.9)}[cls]
    assert neuron_spec(getattr(snn, cls)(reset_mechanism=mechanism, **kwargs)).reset == expected


# ------------------------------------------------------------------------------------------------
# surrogate
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: snn.Leaky(beta=0.9),
        lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.fast_sigmoid(slope=5)),
        lambda: snn.Synaptic(alpha=0.5, beta=0.9, spike_grad=surrogate.sigmoid(slope=3)),
        lambda: snn.Alpha(alpha=0.9, beta=0.5, spike_grad=surrogate.triangular()),
        lambda: snn.Lapicque(beta=0.9, spike_grad=surrogate.atan(alpha=3.0)),
        lambda: snn.RLeaky(beta=0.9, linear_features=2),
        lambda: snn.LeakyParallel(2, 3),
        lambda: snn.LeakyParallel(2, 3, spike_grad=surrogate.fast_sigmoid()),
    ],
)
def test_surrogate_is_the_neurons_own_object(build):
    m = build()
    spec = neuron_spec(m)
    assert spec.surrogate is m.spike_grad
    assert spec.surrogate_description is not None


def test_default_surrogate_description():
    assert neuron_spec(snn.Leaky(beta=0.9)).surrogate_description == ("atan", {"alpha": 2.0})


def test_surrogate_disable_still_builds_a_spec():
    m = snn.Leaky(beta=0.9, surrogate_disable=True)
    spec = neuron_spec(m)
    assert spec.surrogate is m.spike_grad
    assert spec.beta == pytest.approx(0.9, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# internal weights
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,name,fan_in",
    [
        (lambda: snn.RLeaky(beta=0.9, linear_features=7), "recurrent.weight", 7),
        (lambda: snn.RLeaky(beta=0.9, conv2d_channels=4, kernel_size=3), "recurrent.weight", 4 * 3 * 3),
        (lambda: snn.RLeaky(beta=0.9, all_to_all=False, V=torch.ones(5)), "V", 1),
        (lambda: snn.RSynaptic(alpha=0.5, beta=0.9, linear_features=6), "recurrent.weight", 6),
        (lambda: snn.RSynaptic(alpha=0.5, beta=0.9, conv2d_channels=2, kernel_size=(3, 5)), "recurrent.weight", 2 * 3 * 5),
        (lambda: snn.RSynaptic(alpha=0.5, beta=0.9, all_to_all=False, V=0.5), "V", 1),
    ],
)
def test_recurrent_internal_weights(build, name, fan_in):
    m = build()
    (weight,) = internal_weights(m)
    assert (weight.name, weight.role, weight.fan_in) == (name, "recurrent", fan_in)
    parameter = m.get_parameter(weight.name)
    assert isinstance(parameter, nn.Parameter)
    assert any(p is parameter for p in m.parameters())
    if parameter.dim() > 1:
        assert parameter[0].numel() == weight.fan_in


def test_fixed_one_to_one_gain_is_not_a_weight():
    m = snn.RLeaky(beta=0.9, all_to_all=False, V=0.5, learn_recurrent=False)  # V is a buffer then
    assert internal_weights(m) == ()


def test_plain_neurons_have_no_internal_weights():
    for m in (snn.Leaky(beta=0.9), snn.Synaptic(alpha=0.5, beta=0.9), snn.Alpha(alpha=0.9, beta=0.5), snn.Lapicque(beta=0.9)):
        assert internal_weights(m) == ()


# ------------------------------------------------------------------------------------------------
# LeakyParallel
# ------------------------------------------------------------------------------------------------
def leaky_parallel_membrane(m, steps=T):
    """The RNN's membrane for a unit impulse into each neuron (input projection = identity, no bias)."""
    rnn = m.rnn
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.eye(rnn.hidden_size, rnn.input_size))
        for name in ("bias_ih_l0", "bias_hh_l0"):
            if getattr(rnn, name, None) is not None:
                getattr(rnn, name).zero_()
        x = torch.zeros(steps, 1, rnn.input_size, dtype=rnn.weight_ih_l0.dtype)
        x[0] = 1.0
        return rnn(x)[0][:, 0].to(torch.float64)


@pytest.mark.parametrize(
    "build",
    [
        lambda: snn.LeakyParallel(4, 4, beta=0.8),
        lambda: snn.LeakyParallel(4, 4),  # random diagonal, partly negative: the ReLU makes that 0
        lambda: snn.LeakyParallel(3, 3, beta=torch.tensor([0.2, 0.5, 0.9])),
    ],
)
def test_leaky_parallel_matches_its_rnn(build):
    torch.manual_seed(0)
    m = build().double()
    spec = neuron_spec(m)
    assert not isinstance(m, snn.SpikingNeuron)
    assert spec.reset == "none" and spec.input_scale == 1.0
    assert spec.shape == (m.rnn.hidden_size,)
    torch.testing.assert_close(spec.response(T), leaky_parallel_membrane(m), rtol=1e-10, atol=1e-12)


def test_leaky_parallel_internal_weights():
    m = snn.LeakyParallel(5, 3, beta=0.9)
    weights = internal_weights(m)
    assert [(w.name, w.role, w.fan_in) for w in weights] == [("rnn.weight_ih_l0", "input", 5)]
    assert m.get_parameter("rnn.weight_ih_l0") is m.rnn.weight_ih_l0

    dense = snn.LeakyParallel(5, 3, beta=0.9, weight_hh_enable=True)  # W_hh is a full recurrent matrix then
    roles = {w.name: (w.role, w.fan_in) for w in internal_weights(dense)}
    assert roles == {"rnn.weight_ih_l0": ("input", 5), "rnn.weight_hh_l0": ("recurrent", 3)}
    assert isinstance(dense.get_parameter("rnn.weight_hh_l0"), nn.Parameter)


def test_leaky_parallel_learned_beta_is_read_live():
    m = snn.LeakyParallel(2, 3, beta=0.5, learn_beta=True)
    with torch.no_grad():
        m.rnn.weight_hh_l0.copy_(torch.diag(torch.tensor([0.1, 0.7, 1.4])))
    torch.testing.assert_close(neuron_spec(m).beta, values([0.1, 0.7, 1.0]), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls", ["Leaky", "Synaptic", "Alpha", "Lapicque", "RLeaky", "RSynaptic", "LeakyParallel"]
)
def test_supported_classes_are_registered(cls):
    adapter_cls = getattr(snn, cls)
    build = {
        "Leaky": lambda: snn.Leaky(beta=0.9),
        "Synaptic": lambda: snn.Synaptic(alpha=0.5, beta=0.9),
        "Alpha": lambda: snn.Alpha(alpha=0.9, beta=0.5),
        "Lapicque": lambda: snn.Lapicque(beta=0.9),
        "RLeaky": lambda: snn.RLeaky(beta=0.9, linear_features=2),
        "RSynaptic": lambda: snn.RSynaptic(alpha=0.5, beta=0.9, linear_features=2),
        "LeakyParallel": lambda: snn.LeakyParallel(2, 2),
    }[cls]
    adapter = find_adapter(build())
    assert adapter is not None and adapter.cls is adapter_cls and adapter.framework == "snntorch"
    assert neuron_spec(build()).name == f"snntorch.{cls}"


UNSUPPORTED = {
    "SLSTM": lambda: snn.SLSTM(3, 4),
    "SConv2dLSTM": lambda: snn.SConv2dLSTM(1, 2, 3),
    "StateLeaky": lambda: snn.StateLeaky(beta=0.9, channels=3),
    "LinearLeaky": lambda: snn.LinearLeaky(beta=0.9, in_features=3, out_features=4),
    "AssociativeLeaky": lambda: snn.AssociativeLeaky(in_dim=4, d_value=2, d_key=2, num_spiking_neurons=4),
}


@pytest.mark.parametrize("cls", sorted(UNSUPPORTED))
def test_unsupported_neurons_raise(cls):
    m = UNSUPPORTED[cls]()
    with pytest.raises(UnsupportedNeuronError, match=rf"not supported yet: .*\.{cls} "):
        find_adapter(m)
    with pytest.raises(UnsupportedNeuronError, match=cls):
        neuron_spec(m)


def test_delta_leaky_does_not_use_the_leaky_adapter():
    m = snn.DeltaLeaky(beta=0.9)
    assert isinstance(m, snn.Leaky)
    with pytest.raises(UnsupportedNeuronError, match=r"not supported yet: .*DeltaLeaky.*delta_threshold"):
        neuron_spec(m)


def test_unknown_spiking_neuron_subclass_is_unsupported():
    class Custom(snn.SpikingNeuron):
        def forward(self, x):
            return self.fire(x)

    with pytest.raises(UnsupportedNeuronError, match="not supported yet: .*Custom"):
        find_adapter(Custom())


def test_plain_modules_are_not_neurons():
    assert find_adapter(nn.Linear(2, 2)) is None
