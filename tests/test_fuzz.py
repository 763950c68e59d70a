"""Malformed arguments thrown at every entry point (issue 29, part 2).

Hypothesis draws, per entry point, each argument either valid or garbage (wrong types, wrong shapes, NaN and
±inf, huge and tiny numbers, nested lists and dicts, tensors of other shapes and dtypes) and, for
``reinitialize`` and ``Report.load``, a real saved report with one field replaced by garbage, or its JSON text
cut or spliced. Every call must either succeed, or raise the package's error (``SnnInitError``) with the model
(or the tensor) bit for bit as before; the one other exception allowed is one the user's own code raised (the
test's neuron, ``tests/user_neuron.py``), checked from the traceback. Derandomized (the same examples on every
run), no deadline; numbers that only make a valid call long (``steps``, ``max_evaluations``) stay small.
"""
from __future__ import annotations

import json
import os
import tempfile
import traceback
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snn_initplug as sip
from user_neuron import MyLIF, registered

pytestmark = pytest.mark.core_suite  # framework-free; see conftest.py

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True, scope="module")
def lever_registered():
    with registered(threshold_lever=True):
        yield


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), MyLIF(), nn.Linear(5, 3), MyLIF())


X = torch.rand(8, 4, generator=torch.Generator().manual_seed(1)) * 2

# --- garbage ------------------------------------------------------------------------------------------
numbers = st.one_of(st.integers(-3, 3), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([1e-300, -1e-300, 1e300, 5e-324, 2**63, -2**63 - 1, 0.5, 1.0]))
tensors = st.sampled_from([torch.empty(0), torch.rand(3), torch.rand(2, 2), torch.full((8, 4), float("nan")),
                           torch.full((8, 4), float("inf")), torch.zeros(8, 4, dtype=torch.int64),
                           torch.rand(8, 4).half(), torch.rand(8, 7), torch.rand(0, 4), torch.tensor(2.0)])
atoms = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=6), tensors,
                  st.sampled_from([object(), len, sip.surrogate.Uniform(-1.0, 1.0), torch.float16, b"bytes", Ellipsis]))
garbage = st.recursive(atoms, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                                      st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                       max_leaves=6)
small_ints = st.one_of(st.integers(-2, 4), garbage.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)))


def maybe(valid: Any, bad=garbage):
    """A valid value or garbage."""
    return st.one_of(st.just(valid), bad)


def kwargs_of(**fields) -> st.SearchStrategy[dict]:
    """A dict with any subset of ``fields``' keys, each drawn from its strategy."""
    return st.fixed_dictionaries({}, optional=fields)


# --- the check ----------------------------------------------------------------------------------------
def snapshot(subject: Any) -> Any:
    if isinstance(subject, torch.Tensor):
        return subject.clone()
    return {**{k: v.detach().clone() for k, v in subject.state_dict().items()},
            **{f"{n}.theta": m.theta for n, m in subject.named_modules() if isinstance(m, MyLIF)}}


def same(before: Any, subject: Any) -> bool:
    after = snapshot(subject)
    if isinstance(before, torch.Tensor):
        return torch.equal(before.nan_to_num(), after.nan_to_num()) and torch.equal(before.isnan(), after.isnan())
    return before.keys() == after.keys() and all(
        (torch.equal(before[k], after[k]) if isinstance(before[k], torch.Tensor) else before[k] == after[k])
        for k in before)


def users(exc: BaseException) -> bool:
    """Raised in the user's code: the test's neuron, or a garbage callable of the test."""
    return any(os.path.basename(frame.filename) in ("user_neuron.py",) for frame in traceback.extract_tb(exc.__traceback__))


def check(call: Callable[[Any], Any], subject: Any) -> None:
    before = snapshot(subject)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call(subject)
        except sip.SnnInitError:
            assert same(before, subject), "the model changed although the call raised"
        except Exception as exc:  # noqa: BLE001
            if not users(exc):
                raise AssertionError(f"a generic {type(exc).__name__} escaped: {exc}") from exc
            assert same(before, subject), "the model changed although the call raised"


# --- the entry points ---------------------------------------------------------------------------------
OPTION_NAMES = ["variant", "version", "fan_mode", "distribution", "moment", "sigma_u",
                "input_second_moment", "input_mean", "recurrent_fraction", "relay", "mu_u", "input_rate", "steps",
                "target_rate", "tolerance", "start", "start_options", "nonsense"]
METHODS = ["ikun", "spike_aware", "fluctuation", "default", "xavier_uniform", "calibrated"]


@settings(FUZZ, max_examples=300)
@given(example_input=maybe(X), forward=maybe(None, atoms))
def test_plan(example_input, forward):
    check(lambda m: sip.plan(m, example_input, forward=forward), mlp())


@settings(FUZZ, max_examples=500)
@given(method=st.one_of(st.sampled_from(METHODS), garbage), example_input=maybe(X),
       options=st.dictionaries(st.sampled_from(OPTION_NAMES), garbage, max_size=2),
       extra=kwargs_of(generator=garbage, overrides=garbage, skip=garbage))
def test_initialize(method, example_input, options, extra):
    if method == "calibrated":
        options = {**options, "max_evaluations": 2, "steps": 1}
    check(lambda m: sip.initialize(m, method, example_input, **extra, **options), mlp())


@settings(FUZZ, max_examples=250)
@given(example_input=maybe(X), target_rate=maybe(0.2), extra=kwargs_of(
    tolerance=garbage, max_evaluations=small_ints, steps=small_ints, bias=garbage, mode=garbage, seed=garbage,
    weightless=garbage, skip=garbage))
def test_calibrate(example_input, target_rate, extra):
    extra.setdefault("max_evaluations", 3)
    check(lambda m: sip.calibrate(m, example_input, target_rate, **extra), mlp())


@settings(FUZZ, max_examples=250)
@given(factor=maybe(0.5, numbers | garbage), example_input=maybe(X),
       extra=kwargs_of(steps=small_ints, skip=garbage, seed=garbage))
def test_scale_membrane(factor, example_input, extra):
    check(lambda m: sip.scale_membrane(m, factor, example_input, **extra), mlp())


@settings(FUZZ, max_examples=150)
@given(example_input=maybe(X), extra=kwargs_of(steps=small_ints, bounds=garbage, loss_fn=atoms, skip=garbage,
                                                seed=garbage))
def test_balance_gradients(example_input, extra):
    check(lambda m: sip.balance_gradients(m, example_input, **extra), mlp())


@settings(FUZZ, max_examples=250)
@given(example_input=maybe(X), extra=kwargs_of(target=garbage, loss_fn=atoms, label=garbage))
def test_diagnose(example_input, extra):
    check(lambda m: sip.diagnose(m, example_input, **extra), mlp())


def _saved_report() -> dict:
    """A real report, saved as JSON (made at import: the strategies need its fields)."""
    with registered(threshold_lever=True):
        report = sip.initialize(mlp(), "spike_aware", X, generator=torch.Generator().manual_seed(0))
    return json.loads(report.to_json())


REPORT = _saved_report()


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, prefix + (index,))
    return found


PATHS = [p for p in _paths(REPORT) if p]
json_garbage = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=5),
                                      st.floats(allow_nan=False)),
                            lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                            max_leaves=5)


@st.composite
def tampered(draw) -> dict:
    data = json.loads(json.dumps(REPORT))
    path = draw(st.sampled_from(PATHS))
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    if draw(st.booleans()) and isinstance(holder, dict):
        del holder[path[-1]]
    else:
        holder[path[-1]] = draw(json_garbage)
    return data


@settings(FUZZ, max_examples=400)
@given(data=tampered())
def test_reinitialize_a_tampered_report(data):
    def call(model):
        return sip.reinitialize(model, sip.Report.from_dict(data), X)

    check(call, mlp())


@settings(FUZZ, max_examples=300)
@given(text=st.one_of(st.builds(lambda d: json.dumps(d), tampered()),
                      st.builds(lambda cut: json.dumps(REPORT)[:cut], st.integers(0, 400)),
                      st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(1, 200_000)),
                      st.text(max_size=20)))
def test_report_load(text):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "report.json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            sip.Report.load(path)
        except sip.SnnInitError:
            pass


TENSOR_ARGS = st.one_of(st.just(torch.empty(4, 3)), tensors, garbage)


@settings(FUZZ, max_examples=500)
@given(name=st.sampled_from(["ikun_", "spike_aware_", "fluctuation_", "baseline_"]), tensor=TENSOR_ARGS,
       args=st.lists(garbage, max_size=1),
       kwargs=st.dictionaries(st.sampled_from(["threshold", "sigma_u", "target_rate", "input_second_moment", "kernel_sq_sum",
                                               "relay", "input_scale", "generator", "kernel_sums", "input_rate",
                                               "input_mean", "mu_u", "surrogate", "variant", "fan_mode", "name"]),
                              garbage, max_size=3))
def test_tensor_functions(name, tensor, args, kwargs):
    function = getattr(sip, name)
    if name == "ikun_" and "surrogate" not in kwargs:
        kwargs["surrogate"] = lambda x: torch.sigmoid(4 * x)
    if name == "fluctuation_":
        kwargs.setdefault("kernel_sums", (1.0, 1.0))
    if not isinstance(tensor, torch.Tensor):
        with pytest.raises(sip.SnnInitError):
            function(tensor, *args, **kwargs)
        return
    subject = tensor.clone()
    check(lambda t: function(t, *args, **kwargs), subject)
