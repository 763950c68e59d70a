"""Surrogate moments of every built-in surrogate of snnTorch and SpikingJelly, against independent references.

The derivative is taken by autograd through the framework's own object; the reference is a formula written
in ``reference_surrogates.py`` (closed form, or QUADPACK on the formula). Relative error must be <= 1e-6.
"""
import math

import pytest
import torch

import snn_initplug as sip
from conftest import HAS_SNNTORCH, HAS_SPIKINGJELLY, spikingjelly_is_legacy
import reference_surrogates as ref

RTOL = 1e-6
DISTRIBUTIONS = [("uniform", -1.0, 1.0), ("uniform", -0.3, 2.0), ("normal", 0.0, 1.0), ("normal", 0.3, 0.2), ("normal", -0.5, 2.0)]


def to_distribution(dist):
    kind, a, b = dist
    return sip.surrogate.Uniform(a, b) if kind == "uniform" else sip.surrogate.Normal(a, b)


def assert_close(value, expected, what):
    assert math.isfinite(value), what
    scale = max(abs(expected), 1e-9)  # an exactly cancelling integral (triangular) is checked to 1e-15 absolute
    assert abs(value - expected) <= RTOL * scale, f"{what}: got {value!r}, expected {expected!r}, rel err {abs(value - expected) / scale:.2e}"


def check(fn, h, dist, breakpoints=(), closed=None):
    """Compare m1 and m2 with the closed form where given (None entries fall back to dense integration)."""
    moments = sip.surrogate_moments(fn, to_distribution(dist))
    closed = closed or (None, None)
    for k, value, exact in ((1, moments.m1, closed[0]), (2, moments.m2, closed[1])):
        expected = exact if exact is not None else ref.dense_moment(h, k, dist, breakpoints)
        assert_close(value, expected, f"{moments.kind}{moments.params} m{k} on {dist}")


# ----------------------------------------------------------------------------------------------------------
# snnTorch
# ----------------------------------------------------------------------------------------------------------
def snntorch_cases():
    if not HAS_SNNTORCH:
        return []
    from snntorch import surrogate as s

    return [
        ("atan()", lambda: s.atan(), ref.h_atan(2.0), (), "atan", 2.0),
        ("atan(5)", lambda: s.atan(alpha=5.0), ref.h_atan(5.0), (), "atan", 5.0),
        ("fast_sigmoid()", lambda: s.fast_sigmoid(), ref.h_fast_sigmoid(25), (0,), None, None),
        ("fast_sigmoid(4)", lambda: s.fast_sigmoid(slope=4), ref.h_fast_sigmoid(4), (0,), None, None),
        ("sigmoid()", lambda: s.sigmoid(), ref.h_logistic(25), (), "logistic", 25),
        ("sigmoid(3)", lambda: s.sigmoid(slope=3), ref.h_logistic(3), (), "logistic", 3),
        ("spike_rate_escape()", lambda: s.spike_rate_escape(), ref.h_spike_rate_escape(1, 25), (1,), "escape", (1, 25)),
        ("spike_rate_escape(2,10)", lambda: s.spike_rate_escape(beta=2, slope=10), ref.h_spike_rate_escape(2, 10), (1,), "escape", (2, 10)),
        ("straight_through_estimator", lambda: s.straight_through_estimator(), lambda x: 1.0, (), "ste", None),
        ("triangular()", lambda: s.triangular(), ref.h_triangular(1), (0,), "triangular", 1),
        ("triangular(2)", lambda: s.triangular(threshold=2), ref.h_triangular(2), (0,), "triangular", 2),
        ("heaviside", lambda: s.heaviside(), ref.h_heaviside(), (0,), "heaviside", None),
        ("SFS()", lambda: s.SFS(), ref.h_sfs(25, 1), (1,), None, None),
        ("SFS(10,0.25)", lambda: s.SFS(slope=10, B=0.25), ref.h_sfs(10, 0.25), (0.25,), None, None),
    ]


def closed_form(family, param, dist):
    kind, a, b = dist
    if family is None:
        return None
    if kind == "normal":
        if family == "atan":
            return ref.normal_atan_m1(param, a, b), None
        if family == "escape":
            return ref.normal_spike_rate_escape(param[0], param[1], a, b)
        if family == "heaviside":
            return ref.normal_heaviside(a, b)
        if family == "triangular":
            return ref.normal_triangular(param, a, b)
        if family == "ste":
            return 1.0, 1.0
        if family == "erf":
            return ref.normal_erf(param, a, b)
        if family == "rect":
            return ref.normal_rect(param, a, b)
        if family == "pexp":
            return ref.normal_piecewise_exp(param, a, b)
        return None
    if family == "atan":
        return ref.uniform_atan_m1(param, a, b), None
    if family == "logistic":
        return ref.uniform_logistic_m1(param, a, b), None
    if family == "erf":
        return ref.uniform_erf_m1(param, a, b), None
    if family == "rect":
        return ref.uniform_rect(param, a, b)
    if family == "ste":
        return 1.0, 1.0
    if family == "triangular":
        negative, positive = max(0.0, min(b, 0.0) - a), max(0.0, b - max(a, 0.0))
        return param * (negative - positive) / (b - a), param**2
    return None


@pytest.mark.snntorch
@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=str)
@pytest.mark.parametrize("case", snntorch_cases(), ids=lambda c: c[0])
def test_snntorch_surrogate_moments(case, dist):
    _, make, h, breakpoints, family, param = case
    check(make(), h, dist, breakpoints, closed_form(family, param, dist))


@pytest.mark.snntorch
def test_snntorch_descriptions_read_from_the_closure():
    from snntorch import surrogate as s
    import snntorch as snn

    assert sip.surrogate.describe_surrogate(s.atan()) == ("atan", {"alpha": 2.0})
    assert sip.surrogate.describe_surrogate(s.fast_sigmoid(slope=7)) == ("fast_sigmoid", {"slope": 7})
    assert sip.surrogate.describe_surrogate(s.spike_rate_escape(beta=2, slope=3)) == ("spike_rate_escape", {"beta": 2, "slope": 3})
    assert sip.surrogate.describe_surrogate(snn.Leaky(beta=0.5).spike_grad) == ("atan", {"alpha": 2.0})
    # LeakyParallel's default is ATan.apply with alpha=2.0 as a default argument of forward
    lp = snn.LeakyParallel(input_size=3, hidden_size=4, beta=0.5)
    kind, params = sip.surrogate.describe_surrogate(lp.spike_grad)
    assert (kind, params.get("alpha")) == ("ATan", 2.0)
    assert_close(sip.surrogate_moments(lp.spike_grad).m1, ref.uniform_atan_m1(2.0, -1, 1), "LeakyParallel ATan")


@pytest.mark.snntorch
def test_snntorch_failure_modes():
    from snntorch import surrogate as s
    import snntorch as snn

    with pytest.raises(sip.SurrogateError, match="LSO.*TypeError"):
        sip.surrogate_moments(s.LSO())
    disabled = snn.Leaky(beta=0.5, surrogate_disable=True)
    with pytest.raises(sip.SurrogateError, match="no gradient path"):
        sip.surrogate_moments(disabled.spike_grad)
    with pytest.raises(sip.StochasticSurrogateError, match="monte-carlo"):
        sip.surrogate_moments(s.SSO())


@pytest.mark.snntorch
@pytest.mark.parametrize("mean,variance", [(0.0, 0.2), (0.3, 0.5)])
def test_snntorch_sso_monte_carlo_matches_closed_form(mean, variance):
    from snntorch import surrogate as s

    before = torch.random.get_rng_state()
    moments = sip.surrogate_moments(s.SSO(mean=mean, variance=variance), sip.surrogate.Normal(0.3, 0.7), stochastic="monte-carlo", seed=3)
    assert torch.equal(before, torch.random.get_rng_state()), "the global RNG must be left untouched"
    m1, m2 = ref.normal_sso(mean, variance, 0.3, 0.7)
    assert moments.method == "monte-carlo"
    assert abs(moments.m1 - m1) <= 5 * moments.error + 1e-12
    assert abs(moments.m2 - m2) <= 5 * moments.error + 1e-12
    again = sip.surrogate_moments(s.SSO(mean=mean, variance=variance), sip.surrogate.Normal(0.3, 0.7), stochastic="monte-carlo", seed=3)
    assert (again.m1, again.m2) == (moments.m1, moments.m2), "seeded estimate must be reproducible"


# ----------------------------------------------------------------------------------------------------------
# SpikingJelly (2.x and 0.0.0.0.14)
# ----------------------------------------------------------------------------------------------------------
def spikingjelly_cases():
    if not HAS_SPIKINGJELLY:
        return []
    from spikingjelly.activation_based import surrogate as s

    legacy = spikingjelly_is_legacy()
    cases = [
        ("Sigmoid()", lambda: s.Sigmoid(), ref.h_logistic(4.0), (), "logistic", 4.0),
        ("Sigmoid(16)", lambda: s.Sigmoid(alpha=16.0), ref.h_logistic(16.0), (), "logistic", 16.0),
        ("ATan()", lambda: s.ATan(), ref.h_atan(2.0), (), "atan", 2.0),
        ("ATan(0.7)", lambda: s.ATan(alpha=0.7), ref.h_atan(0.7), (), "atan", 0.7),
        ("PiecewiseQuadratic()", lambda: s.PiecewiseQuadratic(), ref.h_piecewise_quadratic(1.0), (-1, 0, 1), None, None),
        ("PiecewiseQuadratic(2.5)", lambda: s.PiecewiseQuadratic(alpha=2.5), ref.h_piecewise_quadratic(2.5), (-0.4, 0, 0.4), None, None),
        ("PiecewiseExp()", lambda: s.PiecewiseExp(), ref.h_piecewise_exp(1.0), (0,), "pexp", 1.0),
        ("PiecewiseExp(3)", lambda: s.PiecewiseExp(alpha=3.0), ref.h_piecewise_exp(3.0), (0,), "pexp", 3.0),
        ("SoftSign()", lambda: s.SoftSign(), ref.h_soft_sign(2.0), (0,), None, None),
        ("Erf()", lambda: s.Erf(), ref.h_erf(2.0), (), "erf", 2.0),
        ("Erf(5)", lambda: s.Erf(alpha=5.0), ref.h_erf(5.0), (), "erf", 5.0),
        ("PiecewiseLeakyReLU()", lambda: s.PiecewiseLeakyReLU(), ref.h_piecewise_leaky_relu(1.0, 0.01, legacy), (-1, 1), None, None),
        ("PiecewiseLeakyReLU(0.5,0.05)", lambda: s.PiecewiseLeakyReLU(w=0.5, c=0.05), ref.h_piecewise_leaky_relu(0.5, 0.05, legacy), (-0.5, 0.5), None, None),
        ("QPseudoSpike(3)", lambda: s.QPseudoSpike(alpha=3.0), ref.h_q_pseudo_spike(3.0), (0,), None, None),
        ("LeakyKReLU(0.1,2)", lambda: s.LeakyKReLU(leak=0.1, k=2.0), ref.h_leaky_k_relu(0.1, 2.0), (0,), None, None),
    ]
    if not legacy:  # 0.0.0.0.14 has no Rect/SuperSpike, and its NonzeroSignLogAbs backward is broken (see below)
        cases += [
            ("NonzeroSignLogAbs()", lambda: s.NonzeroSignLogAbs(), ref.h_nonzero_sign_log_abs(1.0), (0,), None, None),
            ("Rect()", lambda: s.Rect(), ref.h_rect(1.0), (-0.5, 0.5), "rect", 1.0),
            ("Rect(3)", lambda: s.Rect(alpha=3.0), ref.h_rect(3.0), (-1 / 6, 1 / 6), "rect", 3.0),
            ("SuperSpike(2)", lambda: s.SuperSpike(alpha=2.0), ref.h_super_spike(2.0), (0,), None, None),
        ]
    return cases


@pytest.mark.spikingjelly
@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=str)
@pytest.mark.parametrize("case", spikingjelly_cases(), ids=lambda c: c[0])
def test_spikingjelly_surrogate_moments(case, dist):
    _, make, h, breakpoints, family, param = case
    check(make(), h, dist, breakpoints, closed_form(family, param, dist))


@pytest.mark.spikingjelly
def test_spikingjelly_descriptions_and_shared_default():
    from spikingjelly.activation_based import neuron, surrogate as s

    assert sip.surrogate.describe_surrogate(s.Sigmoid()) == ("Sigmoid", {"alpha": 4.0})
    assert sip.surrogate.describe_surrogate(s.ATan(alpha=3.0)) == ("ATan", {"alpha": 3.0})
    assert sip.surrogate.describe_surrogate(s.PiecewiseLeakyReLU(w=0.5, c=0.1)) == ("PiecewiseLeakyReLU", {"w": 0.5, "c": 0.1})
    assert sip.surrogate.describe_surrogate(neuron.LIFNode().surrogate_function) == ("Sigmoid", {"alpha": 4.0})


@pytest.mark.spikingjelly
def test_spikingjelly_mutated_parameter_is_not_served_from_cache():
    from spikingjelly.activation_based import surrogate as s

    sf = s.ATan(alpha=2.0)
    first = sip.surrogate_moments(sf).m1
    sf.alpha = 6.0  # read at call time by the framework: the cache key must follow
    second = sip.surrogate_moments(sf).m1
    assert_close(first, ref.uniform_atan_m1(2.0, -1, 1), "alpha=2")
    assert_close(second, ref.uniform_atan_m1(6.0, -1, 1), "alpha=6 after mutation")


@pytest.mark.spikingjelly
def test_spikingjelly_100_layers_one_integration():
    from spikingjelly.activation_based import neuron, surrogate as s

    sip.surrogate.clear_moment_cache()
    shared = [neuron.LIFNode(surrogate_function=s.ATan(alpha=2.5)) for _ in range(100)]
    values = {sip.surrogate_moments(n.surrogate_function, sip.surrogate.Normal(0, 1)).m1 for n in shared}
    info = sip.surrogate.moment_cache_info()
    assert len(values) == 1
    assert info["integrations"] == 1 and info["hits"] == 99


@pytest.mark.spikingjelly
@pytest.mark.skipif(not HAS_SPIKINGJELLY or not spikingjelly_is_legacy(), reason="needs SpikingJelly 0.0.0.0.14")
def test_spikingjelly_legacy_broken_backward_is_reported():
    from spikingjelly.activation_based import surrogate as s

    # 0.0.0.0.14's NonzeroSignLogAbs passes a tuple to its TorchScript backward: a framework bug.
    with pytest.raises(sip.SurrogateError, match="NonzeroSignLogAbs.*fails in backward"):
        sip.surrogate_moments(s.NonzeroSignLogAbs())
