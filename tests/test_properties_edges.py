"""The model-unchanged promise at the edges (issue 14), as a property over the model types the bad-input rows do
not cover: SpikingJelly multi-step stacks, snnTorch RLeaky and Alpha, a residual model, a custom forward loop
and per-neuron thresholds, each with every method and, half the time, one fault injected (a weight that cannot
be written, a NaN in the batch, a forward that raises at the second call, a bad option).

For every example the call either succeeds, leaving every parameter finite and every buffer and bias as it
was, or raises one of the package's errors (``SnnInitError``; a fault from inside the model's own forward stays
the model's exception), leaving the whole state_dict bit for bit as it was; and no hook is left behind.
Settings are fixed for CI (derandomized, no database); the budget is small (about 10 s on 2 cores).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import snn_initplug as sip  # noqa: E402
from conftest import HAS_SNNTORCH, HAS_SPIKINGJELLY  # noqa: E402
from user_neuron import MyLIF, register, unregister  # noqa: E402

CI = settings(deadline=None, derandomize=True, database=None, max_examples=40,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
T, BATCH = 3, 6

KINDS = ["residual", "custom_forward", "per_neuron_threshold"] + \
    (["snntorch_rleaky", "snntorch_alpha"] if HAS_SNNTORCH else []) + \
    (["spikingjelly_multistep"] if HAS_SPIKINGJELLY else [])
FAULTS = ["none", "none", "unwritable", "nan_input", "raising_forward", "bad_option"]


class ModelError(RuntimeError):
    """Raised by a model's own forward: not the package's, so it passes through unchanged."""


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(4, width), MyLIF()
        self.fc2, self.lif2 = nn.Linear(width, width), MyLIF()
        self.head, self.lif3 = nn.Linear(width, 3), MyLIF()

    def forward(self, x):
        s = self.lif1(self.fc1(x))
        s = self.lif2(self.fc2(s) + s)  # an identity residual around fc2
        return self.lif3(self.head(s))


def build(kind: str, width: int, seed: int):
    """(model, example input, keyword arguments the calls need)."""
    torch.manual_seed(seed)
    x = torch.rand(BATCH, 4, generator=torch.Generator().manual_seed(seed)) * 2
    if kind == "residual":
        return Residual(width), x, {}
    if kind == "custom_forward":
        model = nn.Sequential(nn.Linear(4, width), MyLIF(), nn.Linear(width, 3), MyLIF())
        return model, x, {"forward": lambda m, inp: torch.stack([m(inp) for _ in range(T)])}
    if kind == "per_neuron_threshold":
        theta = torch.linspace(0.5, 1.5, width)
        return nn.Sequential(nn.Linear(4, width), MyLIF(theta=theta), nn.Linear(width, 3), MyLIF()), x, {}
    if kind == "snntorch_rleaky":
        import snntorch as snn

        model = nn.Sequential(nn.Linear(4, width), snn.RLeaky(beta=0.8, linear_features=width, init_hidden=True),
                              nn.Linear(width, 3), snn.Leaky(beta=0.8, init_hidden=True))
        return model, x, {"steps": T}
    if kind == "snntorch_alpha":
        import snntorch as snn

        model = nn.Sequential(nn.Linear(4, width), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
                              nn.Linear(width, 3), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True))
        return model, x, {"steps": T}
    from spikingjelly.activation_based import layer, neuron

    model = nn.Sequential(layer.Linear(4, width, step_mode="m"), neuron.LIFNode(step_mode="m"),
                          layer.Linear(width, 3, step_mode="m"), neuron.LIFNode(step_mode="m"))
    return model, x.unsqueeze(0).repeat(T, 1, 1), {}


def inject(fault: str, model: nn.Module, x: torch.Tensor, kwargs: dict):
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    if fault == "unwritable":
        first.weight = nn.Parameter(first.weight.detach()[:, :1].expand_as(first.weight))
    elif fault == "nan_input":
        x = x.clone()
        x.view(-1)[0] = float("nan")
    elif fault == "raising_forward":
        calls = [0]

        def hook(module, args):
            calls[0] += 1
            if calls[0] == 2:
                raise ModelError("the model fails at its second call")
        first.register_forward_pre_hook(hook)
    elif fault == "bad_option":
        kwargs = {**kwargs, "tolerance": -1.0}
    return x, kwargs


def state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def hooks(model: nn.Module) -> list:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def call(entry: str, method: str, model, x, kwargs):
    if entry == "calibrate":
        return sip.calibrate(model, x, max_evaluations=4, **kwargs)
    options = {k: v for k, v in kwargs.items() if k != "tolerance" or method == "calibrated"}
    if "tolerance" in kwargs and method != "calibrated":
        options["relay"] = 2.0  # the analytic methods' bad option
        if method != "spike_aware":
            options["variant"] = "nope" if method == "ikun" else None
            options.pop("relay")
            if method != "ikun":
                options = {**options, "sigma_u": -1.0} if method == "fluctuation" else {**options, "bogus": 1}
    if method == "calibrated":
        options["max_evaluations"] = 4
    else:
        options.pop("steps", None)
    return sip.initialize(model, method, x, generator=torch.Generator().manual_seed(0), **options)


@pytest.fixture(scope="module", autouse=True)
def registered():
    register()
    yield
    unregister()


@CI
@given(kind=st.sampled_from(KINDS), width=st.integers(2, 12), seed=st.integers(0, 2**16),
       method=st.sampled_from(("ikun", "spike_aware", "fluctuation", "calibrated")),
       entry=st.sampled_from(("initialize", "calibrate")), fault=st.sampled_from(FAULTS))
def test_succeeds_cleanly_or_raises_a_package_error_with_the_model_unchanged(kind, width, seed, method, entry, fault):
    model, x, kwargs = build(kind, width, seed)
    if entry == "calibrate":  # calibrate scales an initialized model
        sip.initialize(model, "ikun", x, **{k: v for k, v in kwargs.items() if k == "forward"})
    x, kwargs = inject(fault, model, x, kwargs)
    before, hooks_before = state(model), hooks(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call(entry, method, model, x, kwargs)
        except (sip.SnnInitError, ModelError):
            after = state(model)
            assert after.keys() == before.keys()
            for key in before:
                assert torch.equal(before[key], after[key]) or \
                    torch.equal(before[key].nan_to_num(), after[key].nan_to_num()), f"{key} changed"
        else:
            assert fault in ("none", "nan_input") or (fault == "raising_forward" and entry == "initialize"
                                                      and method != "calibrated"), f"{fault} was accepted"
            after = state(model)
            for key, value in after.items():
                assert torch.isfinite(value).all() or not torch.isfinite(before[key]).all(), f"{key} not finite"
                if not key.endswith("weight"):  # biases, buffers, neuron states: never written
                    assert torch.equal(value, before[key]) or key.endswith(("u", "mem", "v")), key
    assert hooks(model) == hooks_before
