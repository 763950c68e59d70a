"""SpikingJelly adapter (2.x and 0.0.0.0.14), checked against the framework itself.

The real neuron is driven with a unit impulse (threshold so high that it never fires) in single-step and
multi-step mode; its membrane trace minus the trace for zero input must equal ``spec.response`` and
``spec.kernel_sums``. Reset semantics are checked by replaying random inputs through the spec's fields and
comparing spikes and membrane with the neuron's own.
"""
import inspect
import math

import pytest
import torch

pytest.importorskip("spikingjelly")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

from snn_initplug.adapters import UnsupportedNeuronError, find_adapter, is_neuron, neuron_spec  # noqa: E402
from snn_initplug.neuron import NeuronSpecError  # noqa: E402

pytestmark = pytest.mark.spikingjelly

NEVER = 1e9  # a threshold the impulse never reaches
STEPS = 12
RTOL, ATOL = 1e-6, 1e-9  # PLIF computes sigmoid(w) in float32, the spec in float64


def has(name):
    return isinstance(getattr(sj_neuron, name, None), type)


def needs(name):
    return pytest.mark.skipif(not has(name), reason=f"this SpikingJelly has no {name}")


# ----------------------------------------------------------------------------------------------------------
# Driving the real neuron
# ----------------------------------------------------------------------------------------------------------
def membrane_trace(m, x_seq):
    """V after each step (post-reset), shape [T, ...], through the neuron's own step_mode."""
    m.reset()
    if m.step_mode == "s":
        trace = []
        for x in x_seq:
            m(x)
            trace.append(m.v.detach().clone())
        return torch.stack(trace)
    if getattr(m, "store_v_seq", False):
        m(x_seq)
        return m.v_seq.detach().clone()
    trace = []  # multi-step without store_v_seq (Simple* nodes): run every prefix and keep the last V
    for t in range(len(x_seq)):
        m.reset()
        m(x_seq[: t + 1])
        trace.append(m.v.detach().clone())
    return torch.stack(trace)


def measured_response(m, steps, dtype=torch.float64):
    """K[k] of the real neuron: its trace for a unit impulse minus its trace for zero input.

    The subtraction removes input-independent parts (HalfThresholdIF starts at θ/2, LIF with v_reset != 0
    relaxes toward v_reset), which is exactly what the kernel leaves out.
    """
    impulse = torch.zeros(steps, 1, dtype=dtype)
    impulse[0] = 1.0
    with torch.no_grad():
        driven = membrane_trace(m, impulse)
        rest = membrane_trace(m, torch.zeros_like(impulse))
    m.reset()
    return (driven - rest).reshape(steps).to(torch.float64)


def assert_matches_framework(m, steps=STEPS, dtype=torch.float64, rtol=RTOL, atol=ATOL):
    spec = neuron_spec(m)
    measured = measured_response(m, steps, dtype)
    torch.testing.assert_close(measured, spec.response(steps).reshape(steps), rtol=rtol, atol=atol)
    total, square = spec.kernel_sums(steps)
    assert total == pytest.approx(float(measured.sum()), rel=rtol, abs=atol)
    assert square == pytest.approx(float((measured * measured).sum()), rel=rtol, abs=atol)
    return spec


# ----------------------------------------------------------------------------------------------------------
# Supported neurons: impulse response in 's' and 'm' mode
# ----------------------------------------------------------------------------------------------------------
def set_w(m, w):
    with torch.no_grad():
        m.w.fill_(w)
    return m


def lif_cases():
    cases = []
    for tau in (1.5, 2.0, 10.0):
        for decay_input in (True, False):
            for v_reset in (0.0, None, 0.3):
                cases.append(
                    pytest.param(
                        lambda mode, tau=tau, d=decay_input, r=v_reset: sj_neuron.LIFNode(
                            tau=tau, decay_input=d, v_threshold=NEVER, v_reset=r, step_mode=mode, store_v_seq=mode == "m"
                        ),
                        id=f"LIF-tau{tau}-decay{decay_input}-reset{v_reset}",
                    )
                )
    return cases


def plif_cases():
    cases = []
    for w in (0.7, -1.3, 3.0):
        for decay_input in (True, False):
            for v_reset in (None, 0.0, -0.4):
                cases.append(
                    pytest.param(
                        lambda mode, w=w, d=decay_input, r=v_reset: set_w(
                            sj_neuron.ParametricLIFNode(
                                init_tau=2.0, decay_input=d, v_threshold=NEVER, v_reset=r, step_mode=mode,
                                store_v_seq=mode == "m",
                            ),
                            w,
                        ),
                        id=f"PLIF-w{w}-decay{decay_input}-reset{v_reset}",
                    )
                )
    return cases


def cuba(mode, c_decay, v_decay, v_reset, threshold=NEVER):
    m = sj_neuron.CUBALIFNode(c_decay=c_decay, v_decay=v_decay, v_threshold=threshold, v_reset=v_reset)
    m.step_mode = mode  # CUBALIFNode takes no step_mode argument
    m.store_v_seq = mode == "m"
    return m


OTHER_CASES = [
    pytest.param(
        lambda mode, r=r: sj_neuron.IFNode(v_threshold=NEVER, v_reset=r, step_mode=mode, store_v_seq=mode == "m"),
        id=f"IF-reset{r}",
    )
    for r in (0.0, None, -0.5)
] + [
    pytest.param(
        # θ/2 is the initial V; a modest θ keeps float64 cancellation in the trace difference negligible.
        lambda mode: sj_neuron.HalfThresholdIFNode(v_threshold=1e3, step_mode=mode, store_v_seq=mode == "m"),
        id="HalfThresholdIF",
        marks=needs("HalfThresholdIFNode"),
    ),
    pytest.param(lambda mode: cuba(mode, 0.5, 0.75, 0.0), id="CUBALIF-default", marks=needs("CUBALIFNode")),
    pytest.param(lambda mode: cuba(mode, 0.9, 0.6, None), id="CUBALIF-a.9-b.6-soft", marks=needs("CUBALIFNode")),
    pytest.param(lambda mode: cuba(mode, 0.8, 0.8, 0.2), id="CUBALIF-a=b", marks=needs("CUBALIFNode")),
    pytest.param(
        lambda mode: sj_neuron.SimpleIFNode(v_threshold=NEVER, v_reset=None, step_mode=mode),
        id="SimpleIF",
        marks=needs("SimpleIFNode"),
    ),
    pytest.param(
        lambda mode: sj_neuron.SimpleLIFNode(3.0, True, v_threshold=NEVER, v_reset=0.3, step_mode=mode),
        id="SimpleLIF-decay",
        marks=needs("SimpleLIFNode"),
    ),
    pytest.param(
        lambda mode: sj_neuron.SimpleLIFNode(3.0, False, v_threshold=NEVER, v_reset=0.0, step_mode=mode),
        id="SimpleLIF-nodecay",
        marks=needs("SimpleLIFNode"),
    ),
]


def select(cases, prefix):
    return [case for case in cases if case.id.startswith(prefix)]


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("make", lif_cases() + plif_cases() + OTHER_CASES)
def test_impulse_response_matches_framework(make, mode):
    assert_matches_framework(make(mode))


@needs("OTTTLIFNode")
@pytest.mark.parametrize("name", ["OTTTLIFNode", "SLTTLIFNode"])
@pytest.mark.parametrize("training", [True, False])
def test_online_learning_lif_is_lif(name, training):
    m = getattr(sj_neuron, name)(tau=3.0, v_threshold=NEVER)  # single-step only (asserted by SpikingJelly)
    m.train(training)
    spec = assert_matches_framework(m)
    assert spec.beta == pytest.approx(1 - 1 / 3.0)


@pytest.mark.parametrize("make", lif_cases()[:6] + select(OTHER_CASES, "IF-"))
def test_float32_default_path(make):
    """The default dtype takes SpikingJelly's fused/fast path where it has one."""
    assert_matches_framework(make("m"), dtype=torch.float32, rtol=1e-5, atol=1e-6)
    assert_matches_framework(make("s"), dtype=torch.float32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_eval_mode_same_response(name):
    """0.0.0.0.14 runs TorchScript kernels in eval mode and a Python loop in training mode."""
    m = getattr(sj_neuron, name)(v_threshold=NEVER, v_reset=None, step_mode="m", store_v_seq=True)
    m.eval()
    assert_matches_framework(m)


@pytest.mark.parametrize("make", lif_cases()[::5] + plif_cases()[::7] + select(OTHER_CASES, "CUBALIF"))
def test_infinite_horizon_kernel_sums(make):
    """The closed-form sums against a simulation long enough for the kernel to vanish."""
    m = make("m")
    spec = neuron_spec(m)
    measured = measured_response(m, 1500)
    assert float(measured[-1].abs()) < 1e-12
    total, square = spec.kernel_sums()
    assert total == pytest.approx(float(measured.sum()), rel=1e-6)
    assert square == pytest.approx(float((measured * measured).sum()), rel=1e-6)


def test_if_has_no_infinite_horizon():
    spec = neuron_spec(sj_neuron.IFNode())
    assert spec.beta == 1.0 and spec.input_scale == 1.0
    with pytest.raises(NeuronSpecError, match="no leak"):
        spec.kernel_sums()


# ----------------------------------------------------------------------------------------------------------
# Parameters read live
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay_input", [True, False])
def test_lif_fields_follow_tau(decay_input):
    m = sj_neuron.LIFNode(tau=2.0, decay_input=decay_input, v_threshold=NEVER)
    m.tau = 7.0  # SpikingJelly reads tau at call time
    spec = assert_matches_framework(m)
    assert spec.beta == pytest.approx(1 - 1 / 7.0)
    assert spec.input_scale == pytest.approx(1 / 7.0 if decay_input else 1.0)


def test_plif_reads_the_learned_parameter_live():
    m = sj_neuron.ParametricLIFNode(init_tau=2.0, v_threshold=NEVER)
    assert neuron_spec(m).beta == pytest.approx(0.5)
    for w in (0.7, -2.0):
        set_w(m, w)
        spec = assert_matches_framework(m)
        q = 1.0 / (1.0 + math.exp(-w))  # 1/tau = sigmoid(w)
        assert spec.beta == pytest.approx(1 - q, rel=1e-6)
        assert spec.input_scale == pytest.approx(q, rel=1e-6)


def test_plif_spec_does_not_alias_the_parameter():
    m = sj_neuron.ParametricLIFNode(init_tau=2.0)
    spec = neuron_spec(m)
    set_w(m, 1.5)
    assert spec.beta == pytest.approx(0.5)
    assert m.w.requires_grad and m.w.grad is None


# ----------------------------------------------------------------------------------------------------------
# Reset, threshold and firing: replay the spec's fields against the neuron
# ----------------------------------------------------------------------------------------------------------
def replay(spec, x_seq, v0, offset):
    """SpikingJelly's order: charge, fire at H >= θ, reset; ``offset`` is LIF's drift toward v_reset."""
    v, current = torch.full_like(x_seq[0], v0), torch.zeros_like(x_seq[0])
    spikes, trace = [], []
    for x in x_seq:
        if spec.synaptic_decay is not None:
            current = spec.synaptic_decay * current + x
            x = current
        h = spec.beta * v + spec.input_scale * x + offset
        s = (h >= spec.threshold).to(h)
        v = h - s * spec.threshold if spec.reset == "subtract" else s * spec.reset_value + (1 - s) * h
        spikes.append(s)
        trace.append(v)
    return torch.stack(spikes), torch.stack(trace)


def drift(spec):
    """LIF/PLIF decay toward v_reset: H = βV + cX + (1 − β)·v_reset; 0 for soft reset and for IF (β = 1)."""
    return (1 - spec.beta) * spec.reset_value if spec.reset == "hard" else 0.0


RESET_CASES = [
    pytest.param(lambda r: sj_neuron.IFNode(v_threshold=1.0, v_reset=r, step_mode="m", store_v_seq=True), drift, id="IF"),
    pytest.param(
        lambda r: sj_neuron.LIFNode(tau=2.0, v_threshold=0.6, v_reset=r, step_mode="m", store_v_seq=True), drift, id="LIF"
    ),
    pytest.param(
        lambda r: sj_neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=1.2, v_reset=r, step_mode="m", store_v_seq=True),
        drift,
        id="LIF-nodecay",
    ),
    pytest.param(
        lambda r: set_w(
            sj_neuron.ParametricLIFNode(init_tau=2.0, v_threshold=0.5, v_reset=r, step_mode="m", store_v_seq=True), -0.8
        ),
        drift,
        id="PLIF",
    ),
    # CUBALIF decays toward 0 whatever v_reset is.
    pytest.param(lambda r: cuba("m", 0.6, 0.7, r, threshold=1.5), lambda spec: 0.0, id="CUBALIF", marks=needs("CUBALIFNode")),
]


@pytest.mark.parametrize("v_reset", [None, 0.0, 0.25, -0.3])
@pytest.mark.parametrize("make, offset", RESET_CASES)
def test_reset_and_threshold_reproduce_the_neuron(make, offset, v_reset):
    m = make(v_reset)
    spec = neuron_spec(m)
    if v_reset is None:
        assert spec.reset == "subtract"
    else:
        assert spec.reset == "hard" and spec.reset_value == v_reset
    assert spec.threshold == m.v_threshold and isinstance(spec.threshold, float)

    generator = torch.Generator().manual_seed(0)
    x_seq = 0.3 + 0.6 * torch.randn(40, 16, generator=generator, dtype=torch.float64)
    v0 = m.v  # a float before the first forward: v_reset, or 0.0 for soft reset
    with torch.no_grad():
        spikes = m(x_seq)
    expected_spikes, expected_v = replay(spec, x_seq, v0, offset(spec))
    assert 0 < int(spikes.sum()) < spikes.numel()  # the case exercises both firing and resetting
    torch.testing.assert_close(spikes.to(torch.float64), expected_spikes, rtol=0, atol=0)
    # atol: PLIF evaluates sigmoid(w) in float32, the spec in float64
    torch.testing.assert_close(m.v_seq.to(torch.float64), expected_v, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# step_mode and 0.0.0.0.14's backend do not change the spec
# ----------------------------------------------------------------------------------------------------------
def fields(spec):
    return (spec.threshold, spec.beta, spec.input_scale, spec.reset, spec.reset_value, spec.synaptic_decay,
            spec.spike_scale, spec.surrogate, spec.surrogate_description, spec.name)


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_step_mode_does_not_change_spec(name):
    cls = getattr(sj_neuron, name)
    sf = sj_surrogate.ATan()
    single = neuron_spec(cls(v_reset=None, surrogate_function=sf, step_mode="s"))
    multi = cls(v_reset=None, surrogate_function=sf, step_mode="m")
    assert fields(neuron_spec(multi)) == fields(single)
    multi.step_mode = "s"
    assert fields(neuron_spec(multi)) == fields(single)


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_backend_does_not_change_spec(name):
    cls = getattr(sj_neuron, name)
    if "backend" not in inspect.signature(cls).parameters:
        with pytest.raises(TypeError):  # 2.x removed the argument; the device picks the implementation
            cls(backend="torch")
        pytest.skip("this SpikingJelly has no backend argument")
    sf = sj_surrogate.ATan()
    reference = fields(neuron_spec(cls(surrogate_function=sf, step_mode="s")))
    m = cls(surrogate_function=sf, step_mode="m", backend="torch")
    assert fields(neuron_spec(m)) == reference
    m.backend = "torch"
    assert fields(neuron_spec(m)) == reference
    # The public setter refuses 'cupy' without CuPy installed; the value lives in _backend, and the spec must
    # not depend on it either (nothing is run with it).
    m._backend = "cupy"
    assert m.backend == "cupy"
    assert fields(neuron_spec(m)) == reference


# ----------------------------------------------------------------------------------------------------------
# Surrogate: the module's own object, the shared default untouched
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_surrogate_is_the_modules_own_object(name):
    sf = sj_surrogate.ATan(alpha=3.0)
    m = getattr(sj_neuron, name)(surrogate_function=sf)
    spec = neuron_spec(m)
    assert spec.surrogate is sf
    assert spec.surrogate_description[0] == "ATan" and spec.surrogate_description[1]["alpha"] == 3.0


def snapshot(module):
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(module).items()}


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_shared_default_surrogate_is_returned_not_copied_or_mutated(name):
    cls = getattr(sj_neuron, name)
    default = inspect.signature(cls).parameters["surrogate_function"].default
    before = snapshot(default)
    a, b = cls(), cls()
    assert a.surrogate_function is default and b.surrogate_function is default  # SpikingJelly's own sharing
    spec_a, spec_b = neuron_spec(a), neuron_spec(b)
    assert spec_a.surrogate is default and spec_b.surrogate is default
    spec_a.with_(threshold=2.0)
    assert snapshot(default) == before
    assert a.surrogate_function is default and b.surrogate_function is default


# ----------------------------------------------------------------------------------------------------------
# Registry entry points and unsupported neurons
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["IFNode", "LIFNode", "ParametricLIFNode", "HalfThresholdIFNode", "CUBALIFNode", "OTTTLIFNode", "SLTTLIFNode",
     "SimpleIFNode", "SimpleLIFNode"],
)
def test_supported_classes_are_registered(name):
    if not has(name):
        pytest.skip(f"this SpikingJelly has no {name}")
    cls = getattr(sj_neuron, name)
    adapter = find_adapter(cls(3.0, True) if name == "SimpleLIFNode" else cls())
    assert adapter is not None and adapter.cls is cls and adapter.framework == "spikingjelly"


def test_surrogates_and_layers_are_not_neurons():
    from spikingjelly.activation_based import layer

    assert find_adapter(sj_surrogate.Sigmoid()) is None
    assert find_adapter(layer.Linear(3, 4)) is None
    net = torch.nn.Sequential(layer.Linear(3, 4), sj_neuron.LIFNode())
    assert [name for name, mod in net.named_modules() if is_neuron(mod)] == ["1"]


UNSUPPORTED = [
    ("QIFNode", {}),
    ("EIFNode", {}),
    ("IzhikevichNode", {}),
    ("AdaptBaseNode", {}),
    ("KLIFNode", {}),
    ("RAFNode", {}),
    ("TernaryIFNode", {}),
    ("TernaryLIFNode", {}),
    ("ComplementaryLIFNode", {}),
    ("MPBNLIFNode", {"out_features": 4}),
]


def assert_names(error, m):
    klass = type(m)
    assert str(error.value).startswith("not supported yet: ")
    assert f"{klass.__module__}.{klass.__qualname__}" in str(error.value)


@pytest.mark.parametrize("name, kwargs", UNSUPPORTED, ids=[n for n, _ in UNSUPPORTED])
def test_unsupported_neurons_raise(name, kwargs):
    if not has(name):
        pytest.skip(f"this SpikingJelly has no {name}")
    m = getattr(sj_neuron, name)(**kwargs)
    with pytest.raises(UnsupportedNeuronError) as error:
        find_adapter(m)
    assert_names(error, m)
    with pytest.raises(UnsupportedNeuronError) as error:
        neuron_spec(m)
    assert_names(error, m)


def make_liaf(monkeypatch):
    if not hasattr(sj_neuron.LIAFNode, "single_step_cupy_fp32_inference") and hasattr(sj_neuron.LIFNode, "supported_backends"):
        # 0.0.0.0.14's LIAFNode.__init__ asserts on an attribute that no class defines.
        monkeypatch.setattr(sj_neuron.LIAFNode, "single_step_cupy_fp32_inference", False, raising=False)
    return sj_neuron.LIAFNode(torch.nn.Identity(), False, v_threshold=NEVER)


def test_lif_subclasses_with_their_own_update_raise(monkeypatch):
    """LIAF (analog output) and ILIF (spike counts) subclass LIFNode but replace its update."""
    neurons = [make_liaf(monkeypatch)]
    if has("ILIFNode"):
        neurons.append(sj_neuron.ILIFNode())
    for m in neurons:
        with pytest.raises(UnsupportedNeuronError) as error:
            neuron_spec(m)
        assert_names(error, m)


def test_user_subclasses():
    class RenamedLIF(sj_neuron.LIFNode):  # same update: read as LIF
        def __init__(self, **kwargs):
            super().__init__(tau=4.0, v_threshold=NEVER, **kwargs)

    class RewiredLIF(sj_neuron.LIFNode):  # own update (0.0.0.0.14 and 2.x both route through forward)
        def forward(self, x):
            return super().forward(2.0 * x)

    class CustomNode(sj_neuron.BaseNode):
        pass

    spec = assert_matches_framework(RenamedLIF(step_mode="m", store_v_seq=True))
    assert spec.name == "spikingjelly.RenamedLIF" and spec.beta == pytest.approx(0.75)
    for m in (RewiredLIF(), CustomNode()):
        with pytest.raises(UnsupportedNeuronError) as error:
            neuron_spec(m)
        assert_names(error, m)


def test_diagnose_under_a_forced_cuda_implementation(monkeypatch):
    """2.x refuses its torch reference path (the one that calls a Python spike function, as diagnose's recorder
    is) on CUDA while ``SJ_LIF_CUDA_IMPLEMENTATION`` names one implementation, even ``torch``. For the pass the
    selection must read ``auto``; afterwards the user's choice and the cached selections are back."""
    selection_module = pytest.importorskip("spikingjelly._ops.selection")
    lif_ops = pytest.importorskip("spikingjelly._ops.lif")
    import snn_initplug as sip

    selection = lif_ops._selection
    monkeypatch.setattr(selection, "_requested", "torch")
    monkeypatch.setattr(selection, "_selections", {0: "the user's torch selection"})
    with pytest.raises(RuntimeError, match="cannot run this execution profile"):  # the premise, before any CUDA call
        selection_module._require_automatic_torch(selection, torch.device("cuda", 0), "reference required")
    seen = []
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), sj_neuron.LIFNode(step_mode="m"))
    model[1].register_forward_pre_hook(lambda m, args: seen.append(selection._requested))
    diagnosis = sip.diagnose(model, torch.rand(4, 3, 8))
    assert len(diagnosis) == 1 and seen[-1] == "auto"  # the recorded pass (planning runs the model first)
    assert selection._requested == "torch" and selection._selections == {0: "the user's torch selection"}
