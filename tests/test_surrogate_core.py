"""The surrogate core without any framework: custom callables, quadrature, cache, failure modes, import cost."""
import functools
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import special

import snn_initplug as sip
from snn_initplug.surrogate import integrate


class Triangle(torch.autograd.Function):
    """A user's surrogate: h(x) = max(0, 1 - |x|/w) / w, with jumps in slope at 0 and ±w."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x)
        ctx.w = w
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(1 - x.abs() / ctx.w, min=0) / ctx.w, None


def triangle(w):
    def spike(x):
        return Triangle.apply(x, w)

    return spike


def test_custom_autograd_surrogate_against_closed_form():
    # E over Uniform(-1, 1) of the unit-area triangle of half-width w < 1 is 1/2; E[h^2] = (1/2)(2/(3w)).
    for w in (0.05, 0.3, 0.9):
        m = sip.surrogate_moments(triangle(w), sip.surrogate.Uniform(-1, 1))
        assert m.m1 == pytest.approx(0.5, rel=1e-9)
        assert m.m2 == pytest.approx(1 / (3 * w), rel=1e-9)
        assert m.kind == "triangle" and m.params == {"w": w}


def test_smooth_primitive_surrogate_by_autograd():
    # A surrogate written as a differentiable expression (no custom backward): h = d/dx sigmoid(4x).
    m = sip.surrogate_moments(lambda x: torch.sigmoid(4 * x), sip.surrogate.Uniform(-0.5, 1.5))
    expected = (special.expit(6.0) - special.expit(-2.0)) / 2.0
    assert m.m1 == pytest.approx(expected, rel=1e-9)


def test_partial_and_callable_objects_are_described():
    def spike(x, slope):
        return torch.sigmoid(slope * x)

    kind, params = sip.surrogate.describe_surrogate(functools.partial(spike, slope=3.0))
    assert kind == "spike" and params == {"slope": 3.0}

    class Spiky:
        def __init__(self):
            self.alpha = 2.0

        def __call__(self, x):
            return torch.sigmoid(self.alpha * x)

    assert sip.surrogate.describe_surrogate(Spiky()) == ("Spiky", {"alpha": 2.0})


def test_derivative_values_and_rng_untouched():
    before = torch.random.get_rng_state()
    h = sip.surrogate.surrogate_derivative(triangle(0.5), np.array([-1.0, -0.25, 0.0, 0.25, 1.0]))
    assert torch.allclose(h, torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.equal(before, torch.random.get_rng_state())


def test_works_under_no_grad():
    with torch.no_grad():
        m = sip.surrogate_moments(triangle(0.25), sip.surrogate.Uniform(-1, 1))
    assert m.m1 == pytest.approx(0.5, rel=1e-9)


def test_failure_modes_have_clear_messages():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).to(x)

        @staticmethod
        def backward(ctx, grad):
            raise TypeError("missing 1 required positional argument")

    with pytest.raises(sip.SurrogateError, match="fails in backward: TypeError"):
        sip.surrogate_moments(Broken.apply)
    with pytest.raises(sip.SurrogateError, match="no gradient path"):
        sip.surrogate_moments(lambda x: (x > 0).float())
    with pytest.raises(sip.SurrogateError, match="zero derivative on all of"):
        sip.surrogate_moments(lambda x: 0 * x)
    with pytest.raises(sip.SurrogateError, match="same shape"):
        sip.surrogate_moments(lambda x: x.sum())
    with pytest.raises(sip.SurrogateError, match="non-finite"):
        sip.surrogate_moments(lambda x: torch.sqrt(x.abs()) * 0 + x / (x * 0))
    with pytest.raises(sip.SurrogateError, match="no spike function"):
        sip.surrogate_moments(None)


def test_stochastic_surrogate_is_refused_or_estimated():
    class Noisy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 2 * torch.rand_like(x)  # E[h] = 1, E[h^2] = 4/3

    with pytest.raises(sip.StochasticSurrogateError):
        sip.surrogate_moments(Noisy.apply)
    m = sip.surrogate_moments(Noisy.apply, sip.surrogate.Normal(0, 1), stochastic="monte-carlo", samples=1 << 18, seed=1)
    assert abs(m.m1 - 1.0) < 5 * m.error and abs(m.m2 - 4 / 3) < 5 * m.error


def test_distribution_validation():
    with pytest.raises(ValueError, match="low < high"):
        sip.surrogate.Uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="std > 0"):
        sip.surrogate.Normal(0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        sip.surrogate.Normal(float("nan"), 1.0)
    with pytest.raises(TypeError, match="Uniform or Normal"):
        sip.surrogate_moments(triangle(0.5), (0, 1))
    with pytest.raises(ValueError, match="stochastic"):
        sip.surrogate_moments(triangle(0.5), stochastic="maybe")


def test_cache_shares_equal_surrogates_and_follows_parameters():
    sip.surrogate.clear_moment_cache()
    f = triangle(0.5)
    for _ in range(100):
        sip.surrogate_moments(f, sip.surrogate.Normal(0, 1))
    assert sip.surrogate.moment_cache_info()["integrations"] == 1
    sip.surrogate_moments(triangle(0.5), sip.surrogate.Normal(0, 1))  # same code, same parameters
    assert sip.surrogate.moment_cache_info()["integrations"] == 1
    sip.surrogate_moments(triangle(0.6), sip.surrogate.Normal(0, 1))
    sip.surrogate_moments(f, sip.surrogate.Normal(0, 2))
    assert sip.surrogate.moment_cache_info()["integrations"] == 3


def test_integrate_handles_jumps_kinks_and_cancellation():
    # jump at an irrational point not among the breakpoints
    jump = math.sqrt(2) - 1
    result = integrate(lambda x: np.where(x < jump, 1.0, 3.0), [0.0, 1.0], rtol=1e-12)
    assert result.value[0] == pytest.approx(jump + 3 * (1 - jump), rel=1e-10)
    # an integrand that cancels exactly
    result = integrate(lambda x: np.sign(x - 0.5), [0.0, 1.0])
    assert abs(result.value[0]) < 1e-14
    # a spike far narrower than the initial grid, centred on a breakpoint
    result = integrate(lambda x: 1e4 / (1 + (1e4 * x) ** 2), [-1.0, 0.0, 1.0], rtol=1e-12)
    assert result.value[0] == pytest.approx(2 * math.atan(1e4), rel=1e-10)


def test_import_needs_no_framework_and_loads_lazily():
    """In a fresh interpreter where snnTorch, SpikingJelly and torchvision cannot be imported."""
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('snntorch', 'spikingjelly', 'torchvision'):
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import snn_initplug
        assert 'torch' not in sys.modules, 'import snn_initplug must not import torch eagerly'
        spec = snn_initplug.NeuronSpec(threshold=1.0, beta=0.5, surrogate=lambda x: __import__('torch').sigmoid(4 * x))
        print(snn_initplug.surrogate_moments(spec.surrogate).m1)
        heavy = [m for m in sys.modules if m.split('.')[0] in ('snntorch', 'spikingjelly', 'torchvision', 'matplotlib')]
        assert not heavy, heavy
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    expected = (special.expit(4.0) - special.expit(-4.0)) / 2.0
    assert float(out.stdout.strip()) == pytest.approx(expected, rel=1e-9)


def test_public_functions_are_not_shadowed_by_submodules():
    """Importing a submodule binds its name on the package: no public function may share a submodule's name."""
    code = "import snn_initplug.planning, snn_initplug.calibration, snn_initplug as s; print(callable(s.plan), callable(s.calibrate))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["True", "True"], out.stderr
