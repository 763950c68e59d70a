"""The bad-input matrix (issue 8, part 3): one test per row of ``docs/bad_inputs.md``.

Every public entry point against wrong types, empty models, zero-element weights, non-finite values,
unsupported neurons, inputs of the wrong shape, the meta device, half precision, shared and tied weights and
frozen layers. A row either raises (the exception type and a fragment of its message, and the model is left
bit-for-bit unchanged) or works (and a check says what "works" means).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


# ------------------------------------------------------------------------------------------------------
# A framework-free neuron and small models
# ------------------------------------------------------------------------------------------------------
def spike_fn(v):
    soft = torch.sigmoid(4 * v)
    return soft + ((v > 0).to(v.dtype) - soft).detach()


class Spk(nn.Module):
    def __init__(self, theta=1.0, beta=0.5, reset="subtract"):
        super().__init__()
        self.theta, self.beta, self.reset = theta, beta, reset

    def forward(self, x):
        return spike_fn(x - self.theta)


class NotASpecNeuron(nn.Module):  # its adapter returns a string
    forward = Spk.forward
    theta = 1.0


class BrokenAdapterNeuron(nn.Module):  # its adapter raises ZeroDivisionError
    forward = Spk.forward
    theta = 1.0


@pytest.fixture(scope="module", autouse=True)
def neurons_registered():
    sip.register_neuron(Spk, lambda m: sip.NeuronSpec(threshold=m.theta, beta=m.beta, reset=m.reset, surrogate=spike_fn,
                                                       name="Spk"))
    sip.register_neuron(NotASpecNeuron, lambda m: "not a spec")
    sip.register_neuron(BrokenAdapterNeuron, lambda m: 1 / 0)
    yield
    for cls in (Spk, NotASpecNeuron, BrokenAdapterNeuron):
        sip.unregister_neuron(cls)


def mlp(dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), Spk(), nn.Linear(3, 2), Spk()).to(dtype)


def batch(dtype=torch.float32) -> torch.Tensor:
    return torch.rand(8, 4, generator=torch.Generator().manual_seed(1)).to(dtype)


def seeded():
    return torch.Generator().manual_seed(0)


def with_nan_weight(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    return model


def with_expanded_weight(model: nn.Module) -> nn.Module:
    """The second Linear's weight is a (2, 1) column expanded to (2, 3): one memory location per row."""
    model[2].weight = nn.Parameter(model[2].weight.detach()[:, :1].expand(2, 3))
    return model


def in_inference_mode(call, model):
    with torch.inference_mode():
        return call(model)


def neuron_used_twice() -> nn.Sequential:
    torch.manual_seed(0)
    neuron = Spk()
    return nn.Sequential(nn.Linear(4, 4), neuron, nn.Linear(4, 4), neuron)


def _used_twice_noted(report):
    assert [layer.layer for layer in report.layers] == ["0.weight"]
    assert any("neuron 1 is used at more than one place" in n and "not for its use after 2" in n
               for n in report.notes), report.notes


def _report_dict() -> dict:
    return sip.initialize(mlp(), "ikun", batch(), generator=seeded()).to_dict()


def _report_json() -> str:
    import json

    return json.dumps(_report_dict())


def _load_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.json"
        path.write_text(text)
        return sip.Report.load(path)


def _with_seed(data: dict, seed) -> dict:
    data["layers"][0]["seed"] = seed
    return data


def _tampered_report(change) -> "sip.Report":
    """A real report (ikun with a Uniform distribution option) through JSON, then changed by ``change``."""
    import json

    data = json.loads(sip.initialize(mlp(), "ikun", batch(), generator=seeded(),
                                     distribution=sip.surrogate.Uniform(-1.0, 1.0)).to_json())
    change(data)
    return sip.Report.from_dict(data)


def lever_mlp() -> nn.Sequential:
    """Two layers of the user neuron of tests/user_neuron.py (registered with a threshold lever by the call)."""
    from user_neuron import MyLIF

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), MyLIF(), nn.Linear(6, 3), MyLIF())


def with_lever(call):
    def run(model):
        from user_neuron import registered

        with registered(threshold_lever=True):
            return call(model)
    return run


def traced_mlp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about the data-dependent spike
        return torch.jit.trace(mlp(), batch())


def with_inference_weight() -> nn.Sequential:
    model = mlp()
    with torch.inference_mode():
        weight = torch.randn(3, 4)
    model[0].weight = nn.Parameter(weight, requires_grad=False)
    return model


def _wider_second_layer() -> nn.Sequential:
    model = mlp()
    model[2] = nn.Linear(3, 7)
    model[3] = Spk()
    return model


def parametrized_mlp(kind: str) -> nn.Sequential:
    """mlp() with its first Linear parametrized, in training mode (spectral_norm updates u, v on every read)."""
    from torch.nn.utils import parametrizations, spectral_norm, weight_norm

    wrap = {"spectral-norm": parametrizations.spectral_norm, "weight-norm": parametrizations.weight_norm,
            "old-spectral-norm": spectral_norm, "old-weight-norm": weight_norm}[kind]
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
        model[0] = wrap(model[0])
    return model.train()


def frozen(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    return model


def shared_module_model() -> nn.Sequential:
    """One Linear used at two places."""
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    return nn.Sequential(nn.Linear(4, 3), Spk(), shared, Spk(), shared, Spk())


def tied_model() -> nn.Sequential:
    """Two Linear modules holding one weight Parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Spk(), nn.Linear(4, 4), Spk())
    model[2].weight = model[0].weight
    return model


def snntorch_model(**leaky) -> nn.Module:
    import snntorch as snn

    return nn.Sequential(nn.Linear(4, 3), snn.Leaky(init_hidden=True, **leaky))


def spikingjelly_model(node: str, **kwargs) -> nn.Module:
    from spikingjelly.activation_based import neuron

    return nn.Sequential(nn.Linear(4, 3), getattr(neuron, node)(**kwargs))


# ------------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """``call(model)`` either raises ``raises`` with ``match`` in its message (and ``model`` is unchanged),
    or returns, and ``check(result, model)`` says what "works" means."""

    entry: str
    bad_input: str
    behaviour: str
    call: Callable[[Any], Any]
    model: Callable[[], Any] = lambda: None
    raises: Optional[type] = None
    match: str = ""
    check: Optional[Callable[[Any, Any], None]] = None
    marks: List[Any] = field(default_factory=list)


def raises(exc: type, match: str) -> Dict[str, Any]:
    return {"raises": exc, "match": match, "behaviour": f"`{exc.__name__}`: \"{match}\""}


def works(behaviour: str, check: Callable[[Any, Any], None]) -> Dict[str, Any]:
    return {"behaviour": f"works, and {behaviour}", "check": check}


NEEDS_SNNTORCH = [pytest.mark.snntorch]
NEEDS_SPIKINGJELLY = [pytest.mark.spikingjelly]


# --- checks used by "works" rows ---------------------------------------------------------------------
def weights_replaced_and_finite(report, model):
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [layer.layer for layer in report.layers] == ["0.weight", "2.weight"]


def equals_float32_draws(dtype):
    def check(report, model):
        reference = mlp()
        sip.initialize(reference, "spike_aware", batch(dtype).float(), generator=seeded())
        for name, value in model.named_parameters():
            if name.endswith("weight"):
                assert value.dtype == dtype
                assert torch.equal(value, dict(reference.named_parameters())[name].to(dtype)), name
    return check


def planned_once_with_note(first, second, neuron):
    def check(report, model):
        assert [layer.layer for layer in report.layers] == [first, "2.weight"] or \
            [layer.layer for layer in report.layers] == [first]
        assert any(f"also feeds {neuron}" in note for note in report.notes), report.notes
        assert all(torch.isfinite(p).all() for p in model.parameters())
    return check


def tied_planned_once_from_data(report, model):
    assert [layer.layer for layer in report.layers] == ["0.weight"]
    assert "measured" in report.layers[0].assumed["q_in"]  # the data feeds the first use, not spikes
    assert model[0].weight is model[2].weight


def frozen_still_initialized(report, model):
    before = mlp()
    assert not torch.equal(model[0].weight, before[0].weight)
    assert not any(p.requires_grad for p in model.parameters())


def frozen_still_calibrated(report, model):
    assert report.layers and not any(p.requires_grad for p in model.parameters())


def tensor_fill(name: str) -> Callable[..., torch.Tensor]:
    args = {"ikun_": (spike_fn,), "spike_aware_": (), "baseline_": ("kaiming_normal",), "fluctuation_": ()}[name]
    kwargs = {"fluctuation_": {"kernel_sums": (2.0, 1.3), "input_rate": 0.2}}.get(name, {})
    function = getattr(sip, name)
    return lambda tensor, **extra: function(tensor, *args, **kwargs, **extra)


def filled_like_float32(name, dtype):
    def check(result, _):
        reference = tensor_fill(name)(torch.empty(5, 3), generator=seeded())
        assert result.dtype == dtype and torch.equal(result, reference.to(dtype))
    return check


def no_op(result, _):
    assert result.numel() == 0


def finite(result, _):
    assert torch.isfinite(result).all()


def still_meta(result, _):
    assert result.device.type == "meta"


def non_finite_note(diagnosis, _):
    assert any("non-finite" in note and "0.weight" in note for note in diagnosis.notes), diagnosis.notes


def rows() -> Dict[str, Row]:
    x = batch()
    table: Dict[str, Row] = {}

    def row(id_: str, entry: str, bad_input: str, call, model=lambda: None, marks=(), **expect):
        assert id_ not in table, id_
        table[id_] = Row(entry, bad_input, call=call, model=model, marks=list(marks), **expect)

    # --- initialize ---------------------------------------------------------------------------------
    row("initialize-model-not-module", "initialize", "model is a str", lambda m: sip.initialize("net", "ikun"),
        **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    row("initialize-unknown-method", "initialize", "method='foo'", lambda m: sip.initialize(m, "foo", x), mlp,
        **raises(sip.OptionError, "unknown method"))
    row("initialize-generator-not-generator", "initialize", "generator=0 (an int)",
        lambda m: sip.initialize(m, "ikun", x, generator=0), mlp,
        **raises(sip.InitError, "generator must be a CPU torch.Generator"))
    row("initialize-empty-sequential", "initialize", "nn.Sequential()",
        lambda m: sip.initialize(m, "ikun", x), nn.Sequential, **raises(sip.PlanError, "no spiking neurons"))
    row("initialize-no-neurons", "initialize", "a model with no neuron",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.Linear(4, 3)),
        **raises(sip.PlanError, "no spiking neurons"))
    row("initialize-zero-fan-in", "initialize", "Linear(0, 3) feeding a neuron",
        lambda m: sip.initialize(m, "ikun", torch.rand(8, 0)), lambda: nn.Sequential(nn.Linear(0, 3), Spk()),
        **raises(sip.InitError, "zero-element weight"))
    row("initialize-zero-fan-out", "initialize", "Linear(4, 0) feeding a neuron",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.Linear(4, 0), Spk()),
        **raises(sip.InitError, "zero elements"))
    row("initialize-nan-in-weight", "initialize", "NaN in a planned weight",
        lambda m: sip.initialize(m, "spike_aware", x), lambda: with_nan_weight(mlp()),
        **works("the NaN is overwritten: every weight is finite", weights_replaced_and_finite))
    row("initialize-calibrated-nan-in-weight", "initialize", "NaN in a planned weight, method='calibrated'",
        lambda m: sip.initialize(m, "calibrated", x, max_evaluations=4), lambda: with_nan_weight(mlp()),
        **works("the analytic start overwrites the NaN before calibration", weights_replaced_and_finite))
    row("initialize-nan-in-input", "initialize", "example_input full of NaN, method='spike_aware'",
        lambda m: sip.initialize(m, "spike_aware", torch.full((8, 4), float("nan"))), mlp,
        **raises(sip.InitError, "input second moment is nan"))
    for value, label in ((1.5, "over-one"), (-0.1, "negative"), (float("nan"), "nan"), ("most", "str")):
        row(f"initialize-relay-{label}", "initialize", f"method='spike_aware', relay={value!r}",
            lambda m, value=value: sip.initialize(m, "spike_aware", x, relay=value), mlp,
            **raises(sip.OptionError, "relay must be a number in [0, 1]"))
    row("initialize-copy-relay-no-reset", "initialize",
        "method='spike_aware', relay=1 (copy) into neurons without reset, over 4 steps",
        lambda m: sip.initialize(m, "spike_aware", x, relay=1.0, steps=4),
        lambda: nn.Sequential(nn.Linear(4, 3), Spk(), nn.Linear(3, 3), Spk(reset="none", beta=0.9)),
        **raises(sip.InitError, "reset 'none' cannot copy its input over 4 steps"))
    row("initialize-relay-ikun", "initialize", "method='ikun', relay=0.9 (relay is a spike_aware option)",
        lambda m: sip.initialize(m, "ikun", x, relay=0.9), mlp, **raises(sip.OptionError, "unknown option(s) ['relay']"))
    row("initialize-nan-threshold", "initialize", "registered neuron with θ = NaN",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.Linear(4, 3), Spk(float("nan"))),
        **raises(sip.NeuronSpecError, "neuron 1 (Spk): NeuronSpec.threshold must be finite"))
    row("initialize-nan-threshold-snntorch", "initialize", "snnTorch Leaky(threshold=nan)",
        lambda m: sip.initialize(m, "ikun", x), lambda: snntorch_model(beta=0.5, threshold=float("nan")),
        marks=NEEDS_SNNTORCH, **raises(sip.NeuronSpecError, "neuron 1 (Leaky): NeuronSpec.threshold must be finite"))
    row("initialize-inf-threshold-snntorch", "initialize", "snnTorch Leaky(threshold=inf)",
        lambda m: sip.initialize(m, "ikun"), lambda: snntorch_model(beta=0.5, threshold=float("inf")),
        marks=NEEDS_SNNTORCH, **raises(sip.NeuronSpecError, "NeuronSpec.threshold must be finite, got inf"))
    row("initialize-nan-beta-snntorch", "initialize", "snnTorch Leaky(beta=nan)",
        lambda m: sip.initialize(m, "ikun", x), lambda: snntorch_model(beta=float("nan")),
        marks=NEEDS_SNNTORCH, **raises(sip.NeuronSpecError, "NeuronSpec.beta must be finite"))
    row("initialize-nan-threshold-spikingjelly", "initialize", "SpikingJelly LIFNode(v_threshold=nan)",
        lambda m: sip.initialize(m, "ikun", x), lambda: spikingjelly_model("LIFNode", v_threshold=float("nan")),
        marks=NEEDS_SPIKINGJELLY, **raises(sip.NeuronSpecError, "neuron 1 (LIFNode): NeuronSpec.threshold must be finite"))
    row("initialize-nan-plif-weight-spikingjelly", "initialize", "SpikingJelly ParametricLIFNode with w = NaN",
        lambda m: sip.initialize(m, "ikun", x), lambda: _plif_with_nan_w(),
        marks=NEEDS_SPIKINGJELLY, **raises(sip.NeuronSpecError, "NeuronSpec.tau must be finite"))
    row("initialize-unsupported-snntorch", "initialize", "snnTorch SLSTM",
        lambda m: sip.initialize(m, "ikun", x), lambda: _snntorch_slstm(), marks=NEEDS_SNNTORCH,
        **raises(sip.UnsupportedNeuronError, "not supported yet"))
    row("initialize-unsupported-spikingjelly", "initialize", "SpikingJelly IzhikevichNode",
        lambda m: sip.initialize(m, "ikun", x), lambda: spikingjelly_model("IzhikevichNode"),
        marks=NEEDS_SPIKINGJELLY, **raises(sip.UnsupportedNeuronError, "not supported yet"))
    row("initialize-adapter-returns-non-spec", "initialize", "a registered to_spec returning a str",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.Linear(4, 3), NotASpecNeuron()),
        **raises(sip.PlanError, "returned str, not a NeuronSpec"))
    row("initialize-adapter-raises", "initialize", "a registered to_spec raising ZeroDivisionError",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.Linear(4, 3), BrokenAdapterNeuron()),
        **raises(sip.PlanError, "reading neuron 1 (BrokenAdapterNeuron) failed: ZeroDivisionError"))
    row("initialize-wrong-input-shape", "initialize", "example_input of shape (8, 7) for Linear(4, ·)",
        lambda m: sip.initialize(m, "ikun", torch.rand(8, 7)), mlp,
        **raises(sip.PlanError, "does not run on the example input"))
    row("initialize-input-not-tensor", "initialize", "example_input='abc'",
        lambda m: sip.initialize(m, "ikun", "abc"), mlp, **raises(sip.PlanError, "does not run on the example input"))
    row("initialize-meta", "initialize", "model on the meta device", lambda m: sip.initialize(m, "ikun", x),
        lambda: mlp().to("meta"), **raises(sip.PlanError, "meta device"))
    row("initialize-meta-module-order", "initialize", "model on the meta device, no example input",
        lambda m: sip.initialize(m, "ikun"), lambda: mlp().to("meta"), **raises(sip.PlanError, "meta device"))
    for dtype in (torch.float16, torch.bfloat16):
        short = str(dtype).split(".")[1]
        row(f"initialize-{short}", "initialize", f"{short} parameters and input",
            lambda m, dtype=dtype: sip.initialize(m, "spike_aware", batch(dtype), generator=seeded()),
            lambda dtype=dtype: mlp(dtype),
            **works("the weights equal the float32 draws cast", equals_float32_draws(dtype)))
        row(f"initialize-calibrated-{short}", "initialize", f"{short} parameters, method='calibrated'",
            lambda m, dtype=dtype: sip.initialize(m, "calibrated", batch(dtype), max_evaluations=4),
            lambda dtype=dtype: mlp(dtype), **works("every weight is finite", weights_replaced_and_finite))
    row("initialize-shared-module", "initialize", "one Linear used at two places",
        lambda m: sip.initialize(m, "spike_aware", x), shared_module_model,
        **works("the shared weight is planned once, for its first neuron, with a note",
                planned_once_with_note("0.weight", "2.weight", "5")))
    row("initialize-shared-module-module-order", "initialize", "one Linear used at two places, no example input",
        lambda m: sip.initialize(m, "ikun"), shared_module_model,
        **works("the same: planned once, with a note", planned_once_with_note("0.weight", "2.weight", "5")))
    row("initialize-tied-weights", "initialize", "two Linear modules sharing one weight Parameter",
        lambda m: sip.initialize(m, "spike_aware", x), tied_model,
        **works("planned once, for the first module (with the data's statistics), with a note",
                tied_planned_once_from_data))
    row("initialize-tied-weights-module-order", "initialize", "tied weights, no example input",
        lambda m: sip.initialize(m, "ikun"), tied_model,
        **works("planned once, with a note", planned_once_with_note("0.weight", "2.weight", "3")))
    row("initialize-frozen", "initialize", "requires_grad=False everywhere",
        lambda m: sip.initialize(m, "spike_aware", x), lambda: frozen(mlp()),
        **works("the weights are initialized and stay frozen", frozen_still_initialized))
    row("initialize-calibrated-frozen", "initialize", "requires_grad=False, method='calibrated'",
        lambda m: sip.initialize(m, "calibrated", x, max_evaluations=4), lambda: frozen(mlp()),
        **works("the weights are initialized and stay frozen", frozen_still_initialized))
    row("initialize-calibrated-no-input", "initialize", "method='calibrated' without example_input",
        lambda m: sip.initialize(m, "calibrated"), mlp, **raises(sip.InitError, "needs example_input"))

    # --- calibrate ----------------------------------------------------------------------------------
    row("calibrate-model-not-module", "calibrate", "model is a str", lambda m: sip.calibrate("net", x),
        **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    row("calibrate-empty-sequential", "calibrate", "nn.Sequential()", lambda m: sip.calibrate(m, x),
        nn.Sequential, **raises(sip.PlanError, "no spiking neurons"))
    row("calibrate-no-input", "calibrate", "example_input=None", lambda m: sip.calibrate(m, None), mlp,
        **raises(sip.InitError, "needs a real batch"))
    row("calibrate-target-nan", "calibrate", "target_rate=nan", lambda m: sip.calibrate(m, x, float("nan")), mlp,
        **raises(sip.OptionError, "must lie in (0, 1)"))
    row("calibrate-target-not-number", "calibrate", "target_rate='high'", lambda m: sip.calibrate(m, x, "high"), mlp,
        **raises(sip.OptionError, "target rate"))
    row("calibrate-weightless-unknown", "calibrate", "weightless='thresholds'",
        lambda m: sip.calibrate(m, x, weightless="thresholds"), mlp,
        **raises(sip.OptionError, "weightless must be one of ['report', 'threshold']"))
    row("calibrate-max-evaluations-zero", "calibrate", "max_evaluations=0",
        lambda m: sip.calibrate(m, x, max_evaluations=0), mlp,
        **raises(sip.OptionError, "max_evaluations"))
    row("calibrate-nan-in-weight", "calibrate", "NaN in a weight it scales",
        lambda m: sip.calibrate(m, x, max_evaluations=4), lambda: with_nan_weight(mlp()),
        **raises(sip.InitError, "non-finite"))
    row("calibrate-wrong-input-shape", "calibrate", "example_input of the wrong shape",
        lambda m: sip.calibrate(m, torch.rand(8, 7)), mlp, **raises(sip.PlanError, "does not run on the example input"))
    row("calibrate-meta", "calibrate", "model on the meta device", lambda m: sip.calibrate(m, x),
        lambda: mlp().to("meta"), **raises(sip.PlanError, "meta device"))
    row("calibrate-float16", "calibrate", "float16 parameters and input",
        lambda m: sip.calibrate(m, batch(torch.float16), max_evaluations=4), lambda: mlp(torch.float16),
        **works("the weights stay finite float16", lambda r, m: weights_finite_in(m, torch.float16)))
    row("calibrate-frozen", "calibrate", "requires_grad=False everywhere",
        lambda m: sip.calibrate(m, x, max_evaluations=4), lambda: frozen(mlp()),
        **works("the layers are calibrated and stay frozen", frozen_still_calibrated))

    # --- plan ---------------------------------------------------------------------------------------
    row("plan-model-not-module", "plan", "model is a str", lambda m: sip.plan("net"),
        **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    row("plan-empty-sequential", "plan", "nn.Sequential()", lambda m: sip.plan(m), nn.Sequential,
        **raises(sip.PlanError, "no spiking neurons"))
    row("plan-meta", "plan", "model on the meta device", lambda m: sip.plan(m, x), lambda: mlp().to("meta"),
        **raises(sip.PlanError, "meta device"))
    row("plan-wrong-input-shape", "plan", "example_input of the wrong shape", lambda m: sip.plan(m, torch.rand(8, 7)),
        mlp, **raises(sip.PlanError, "does not run on the example input"))
    row("plan-nan-threshold", "plan", "registered neuron with θ = NaN", lambda m: sip.plan(m),
        lambda: nn.Sequential(nn.Linear(4, 3), Spk(float("nan"))),
        **raises(sip.NeuronSpecError, "neuron 1 (Spk): NeuronSpec.threshold must be finite"))
    row("plan-zero-fan-in", "plan", "Linear(0, 3) feeding a neuron", lambda m: sip.plan(m, torch.rand(8, 0)),
        lambda: nn.Sequential(nn.Linear(0, 3), Spk()),
        **works("the layer is planned with fan_in 0 (initialize refuses it)", lambda p, m: _fan_in_is(p, 0)))
    row("plan-tied-weights", "plan", "two Linear modules sharing one weight Parameter", lambda m: sip.plan(m, x),
        tied_model, **works("one entry, named after the first module, fed by the data", _tied_plan))

    # --- scale_membrane -----------------------------------------------------------------------------
    row("scale-membrane-model-not-module", "scale_membrane", "model is a str",
        lambda m: sip.scale_membrane("net", 0.5, x), **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    for value, label in ((0, "0"), (-0.5, "-0.5"), (float("nan"), "NaN"), (float("inf"), "inf")):
        row(f"scale-membrane-factor-{label}", "scale_membrane", f"factor={label}",
            lambda m, v=value: sip.scale_membrane(m, v, x), mlp,
            **raises(sip.OptionError, "factor must be a positive finite number"))
    row("scale-membrane-factor-str", "scale_membrane", "factor='0.5'", lambda m: sip.scale_membrane(m, "0.5", x), mlp,
        **raises(sip.OptionError, "factor must be a positive number"))
    row("scale-membrane-no-batch", "scale_membrane", "example_input=None", lambda m: sip.scale_membrane(m, 0.5, None),
        mlp, **raises(sip.InitError, "needs a real batch"))
    row("scale-membrane-no-threshold-lever", "scale_membrane", "a user neuron registered without scale_threshold",
        lambda m: sip.scale_membrane(m, 0.5, x), mlp, **raises(sip.InitError, "threshold of neuron 1 (Spk) cannot be set"))
    row("scale-membrane-inference-mode", "scale_membrane", "called under torch.inference_mode()",
        lambda m: in_inference_mode(lambda model: sip.scale_membrane(model, 0.5, x), m), mlp,
        **raises(sip.PlanError, "inference_mode"))
    row("scale-membrane-skip-everything", "scale_membrane", "skip='*'", lambda m: sip.scale_membrane(m, 0.5, x, skip="*"),
        mlp, **raises(sip.PlanError, "no neuron to scale"))

    # --- balance_gradients --------------------------------------------------------------------------
    row("balance-gradients-model-not-module", "balance_gradients", "model is a str",
        lambda m: sip.balance_gradients("net", x), **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    for bounds, label in (((2, 4), "(2, 4)"), ((0.5, float("nan")), "(0.5, NaN)"), ((0, 4), "(0, 4)")):
        row(f"balance-gradients-bounds-{label}", "balance_gradients", f"bounds={label}",
            lambda m, b=bounds: sip.balance_gradients(m, x, bounds=b), mlp,
            **raises(sip.OptionError, "bounds must satisfy 0 < low < 1 < high"))
    row("balance-gradients-bounds-str", "balance_gradients", "bounds='wide'",
        lambda m: sip.balance_gradients(m, x, bounds="wide"), mlp, **raises(sip.OptionError, "bounds must be two numbers"))
    row("balance-gradients-loss-fn-not-callable", "balance_gradients", "loss_fn=3",
        lambda m: sip.balance_gradients(m, x, loss_fn=3), mlp, **raises(sip.ArgumentTypeError, "loss_fn must be callable"))
    row("balance-gradients-no-batch", "balance_gradients", "example_input=None",
        lambda m: sip.balance_gradients(m, None), mlp, **raises(sip.InitError, "needs a real batch"))
    row("balance-gradients-no-threshold-lever", "balance_gradients", "a user neuron registered without scale_threshold",
        lambda m: sip.balance_gradients(m, x), mlp, **raises(sip.InitError, "threshold of neuron 1 (Spk) cannot be set"))
    row("balance-gradients-inference-mode", "balance_gradients", "called under torch.inference_mode()",
        lambda m: in_inference_mode(lambda model: sip.balance_gradients(model, x), m), mlp,
        **raises(sip.PlanError, "inference_mode"))

    # --- diagnose -----------------------------------------------------------------------------------
    row("diagnose-model-not-module", "diagnose", "model is a str", lambda m: sip.diagnose("net", x),
        **raises(sip.ArgumentTypeError, "model must be a torch.nn.Module"))
    row("diagnose-empty-sequential", "diagnose", "nn.Sequential()", lambda m: sip.diagnose(m, x), nn.Sequential,
        **raises(sip.PlanError, "no spiking neurons"))
    row("diagnose-no-input", "diagnose", "example_input=None", lambda m: sip.diagnose(m), mlp,
        **raises(sip.DiagnoseError, "needs example_input"))
    row("diagnose-wrong-input-shape", "diagnose", "example_input of the wrong shape",
        lambda m: sip.diagnose(m, torch.rand(8, 7)), mlp, **raises(sip.PlanError, "does not run on the example input"))
    row("diagnose-meta", "diagnose", "model on the meta device", lambda m: sip.diagnose(m, x),
        lambda: mlp().to("meta"), **raises(sip.PlanError, "meta device"))
    row("diagnose-nan-in-weight", "diagnose", "NaN in a weight", lambda m: sip.diagnose(m, x),
        lambda: with_nan_weight(mlp()), **works("a note names the non-finite parameter", non_finite_note))
    row("diagnose-float16", "diagnose", "float16 parameters and input", lambda m: sip.diagnose(m, batch(torch.float16)),
        lambda: mlp(torch.float16), **works("it returns rates for both layers", lambda d, m: _two_layers(d)))

    # --- tensor initializers ------------------------------------------------------------------------
    for name in ("ikun_", "spike_aware_", "fluctuation_", "baseline_"):
        fill = tensor_fill(name)
        row(f"{name}-not-a-tensor", name, "a list", lambda m, fill=fill: fill([[1.0, 2.0]]),
            **raises(sip.ArgumentTypeError, "expected a torch.Tensor"))
        row(f"{name}-one-dimensional", name, "shape (3,)", lambda m, fill=fill: fill(torch.empty(3)),
            **raises(sip.InitError, "at least 2 dimensions"))
        for shape in ((0, 3), (3, 0)):
            row(f"{name}-zero-element-{shape[0]}x{shape[1]}", name, f"shape {shape}",
                lambda m, fill=fill, shape=shape: _warns_no_op(fill, shape),
                **works("it is a no-op with torch.nn.init's warning", no_op))
        row(f"{name}-integer", name, "an int64 tensor", lambda m, fill=fill: fill(torch.zeros(3, 3, dtype=torch.int64)),
            **raises(sip.InitError, "must be floating point"))
        row(f"{name}-nan", name, "a tensor full of NaN",
            lambda m, fill=fill: fill(torch.full((3, 3), float("nan"))), **works("every value is replaced", finite))
        row(f"{name}-meta", name, "a meta tensor", lambda m, fill=fill: fill(torch.empty(3, 3, device="meta")),
            **works("it stays a meta tensor (no data to fill), as with torch.nn.init", still_meta))
        for dtype in (torch.float16, torch.bfloat16):
            short = str(dtype).split(".")[1]
            row(f"{name}-{short}", name, f"a {short} tensor",
                lambda m, fill=fill, dtype=dtype: fill(torch.empty(5, 3, dtype=dtype), generator=seeded()),
                **works("the values equal the float32 draws cast", filled_like_float32(name, dtype)))
        row(f"{name}-generator-not-generator", name, "generator=0 (an int)",
            lambda m, fill=fill: fill(torch.empty(3, 3), generator=0),
            **raises(sip.InitError, "generator must be a CPU torch.Generator"))
        row(f"{name}-frozen-parameter", name, "an nn.Parameter with requires_grad=False",
            lambda m, fill=fill: fill(nn.Parameter(torch.empty(3, 3), requires_grad=False)),
            **works("it is filled and stays frozen", lambda r, m: _filled_frozen(r)))
    row("ikun_-no-surrogate", "ikun_", "surrogate=None", lambda m: sip.ikun_(torch.empty(3, 3), None),
        **raises(sip.InitError, "needs the neuron's surrogate"))
    row("ikun_-surrogate-not-callable", "ikun_", "surrogate='atan'", lambda m: sip.ikun_(torch.empty(3, 3), "atan"),
        **raises(sip.SurrogateError, "fails in forward"))
    for value, label in ((float("nan"), "nan"), (float("inf"), "inf"), ("high", "str"), ([1.0, 2.0], "list")):
        row(f"spike_aware_-threshold-{label}", "spike_aware_", f"threshold={value!r}",
            lambda m, value=value: sip.spike_aware_(torch.empty(3, 3), value), **raises(sip.InitError, "threshold"))
    row("baseline_-unknown-name", "baseline_", "name='foo'", lambda m: sip.baseline_(torch.empty(3, 3), "foo"),
        **raises(sip.InitError, "unknown baseline"))

    # --- surrogate_moments --------------------------------------------------------------------------
    row("surrogate_moments-not-callable", "surrogate_moments", "fn='atan'", lambda m: sip.surrogate_moments("atan"),
        **raises(sip.SurrogateError, "fails in forward"))
    row("surrogate_moments-none", "surrogate_moments", "fn=None", lambda m: sip.surrogate_moments(None),
        **raises(sip.SurrogateError, "no spike function given"))
    row("surrogate_moments-nan-derivative", "surrogate_moments", "a spike function with a NaN derivative",
        lambda m: sip.surrogate_moments(lambda v: v * float("nan")), **raises(sip.SurrogateError, "non-finite derivative"))
    row("surrogate_moments-no-gradient", "surrogate_moments", "a plain step function (no gradient)",
        lambda m: sip.surrogate_moments(lambda v: (v > 0).float()), **raises(sip.SurrogateError, "no gradient path"))
    row("surrogate_moments-raises", "surrogate_moments", "a spike function raising ZeroDivisionError",
        lambda m: sip.surrogate_moments(lambda v: 1 / 0), **raises(sip.SurrogateError, "fails in forward"))
    row("surrogate_moments-distribution-not-law", "surrogate_moments", "distribution='uniform'",
        lambda m: sip.surrogate_moments(spike_fn, "uniform"), **raises(sip.ArgumentTypeError, "must be snn_initplug.surrogate.Uniform or Normal"))
    row("surrogate_moments-distribution-nan", "surrogate_moments", "Uniform(nan, 1)",
        lambda m: sip.surrogate_moments(spike_fn, sip.surrogate.Uniform(float("nan"), 1.0)), **raises(sip.SurrogateError, "need finite"))

    # --- the model-unchanged promise at the edges (issue 14) --------------------------------------------
    row("initialize-expanded-weight", "initialize", "the second weight is an expanded view (its writes would overlap)",
        lambda m: sip.initialize(m, "ikun", x), lambda: with_expanded_weight(mlp()),
        **raises(sip.InitError, "2.weight has elements that share memory"))
    row("initialize-calibrated-expanded-weight", "initialize", "method='calibrated', the second weight expanded",
        lambda m: sip.initialize(m, "calibrated", x, max_evaluations=3), lambda: with_expanded_weight(mlp()),
        **raises(sip.InitError, "2.weight has elements that share memory"))
    row("calibrate-expanded-weight", "calibrate", "the second weight is an expanded view",
        lambda m: sip.calibrate(m, x, max_evaluations=3), lambda: with_expanded_weight(mlp()),
        **raises(sip.InitError, "2.weight has elements that share memory"))

    for entry, call in (("initialize", lambda m: sip.initialize(m, "ikun", x)), ("calibrate", lambda m: sip.calibrate(m, x)),
                        ("diagnose", lambda m: sip.diagnose(m, x)), ("plan", lambda m: sip.plan(m, x))):
        row(f"{entry}-inference-mode", entry, "called inside torch.inference_mode()",
            lambda m, call=call: in_inference_mode(call, m), mlp, **raises(sip.PlanError, "cannot run under torch.inference_mode()"))
    row("initialize-forward-ignores-model", "initialize", "forward= that never calls the model",
        lambda m: sip.initialize(m, "ikun", x, forward=lambda model, inp: inp), mlp,
        **raises(sip.PlanError, "no weight layer feeds a neuron (neuron 1 was not called by the forward pass"))
    row("initialize-neuron-without-weight", "initialize", "a neuron with no weight layer before it: nn.Sequential(Spk())",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(Spk()),
        **raises(sip.PlanError, "no weight layer feeds a neuron (neurons with no weight layer before them: 0)"))
    row("initialize-neuron-used-twice", "initialize", "one neuron module used after two different layers",
        lambda m: sip.initialize(m, "ikun", x), neuron_used_twice,
        **works("the first use is planned, and a note names the unplanned one",
                lambda report, m: _used_twice_noted(report)))

    # generic exceptions from inside, nonsense accepted: now each a documented error
    row("initialize-skip-list-of-int", "initialize", "skip=[0]", lambda m: sip.initialize(m, "ikun", x, skip=[0]), mlp,
        **raises(sip.OptionError, "skip must be a layer name pattern, a predicate on the LayerPlan, or a list of them"))
    row("calibrate-skip-int", "calibrate", "skip=0 (was ignored)", lambda m: sip.calibrate(m, x, skip=0), mlp,
        **raises(sip.OptionError, "skip must be a layer name pattern"))
    row("initialize-sigma-overflow", "initialize", "method='spike_aware', sigma_u=1e200",
        lambda m: sip.initialize(m, "spike_aware", x, sigma_u=1e200), mlp,
        **raises(sip.InitError, "the law of 0.weight cannot be computed with these options (OverflowError"))
    row("initialize-input-rate-above-one", "initialize", "method='fluctuation', input_rate=1.5",
        lambda m: sip.initialize(m, "fluctuation", x, input_rate=1.5), mlp,
        **raises(sip.OptionError, "input_rate must lie in [0, 1]"))
    for value, label in ((0, "zero"), (True, "bool"), (2.7, "fraction")):
        row(f"initialize-fluctuation-steps-{label}", "initialize", f"method='fluctuation', steps={value!r}",
            lambda m, value=value: sip.initialize(m, "fluctuation", x, steps=value), mlp,
            **raises(sip.OptionError, "steps must be 'single', 'stationary' or a number of steps"))
    row("initialize-method-list", "initialize", "method=['ikun']", lambda m: sip.initialize(m, ["ikun"], x), mlp,
        **raises(sip.OptionError, "expected a method name or an options record"))
    row("initialize-lazy-linear", "initialize", "an unmaterialized LazyLinear",
        lambda m: sip.initialize(m, "ikun", x), lambda: nn.Sequential(nn.LazyLinear(3), Spk()),
        **raises(sip.PlanError, "0.weight, 0.bias not materialized yet (a Lazy module)"))
    row("initialize-empty-batch", "initialize", "example_input with 0 rows, method='spike_aware'",
        lambda m: sip.initialize(m, "spike_aware", x[:0]), mlp, **raises(sip.InitError, "example_input has no elements"))
    for key, value, match in (("seed", 2**70, "seed must be an integer in [-2**63, 2**64)"),
                              ("seed", 1.5, "seed must be an integer"),
                              ("tolerance", "0.1", "tolerance must be a finite number"),
                              ("max_evaluations", True, "max_evaluations must be a positive integer"),
                              ("steps", 2.7, "steps must be an integer >= 1")):
        row(f"calibrate-{key}-{value!r}".replace("'", ""), "calibrate", f"{key}={value!r}",
            lambda m, key=key, value=value: sip.calibrate(m, x, **{key: value}), mlp, **raises(sip.OptionError, match))
    row("calibrate-nan-batch", "calibrate", "example_input full of NaN (was 'unreachable')",
        lambda m: sip.calibrate(m, torch.full((8, 4), float("nan"))), mlp,
        **raises(sip.InitError, "example_input has non-finite values"))
    row("calibrate-empty-batch", "calibrate", "example_input with 0 rows (was 'a silent input?')",
        lambda m: sip.calibrate(m, x[:0]), mlp, **raises(sip.InitError, "example_input has no elements"))
    row("calibrate-empty-list", "calibrate", "example_input=[] (no time step)",
        lambda m: sip.calibrate(m, []), mlp, **raises(sip.InitError, "example_input is an empty list"))
    for entry, call in (("initialize", lambda m, v: sip.initialize(m, x, steps=v)),
                        ("scale_membrane", lambda m, v: sip.scale_membrane(m, 0.5, x, steps=v)),
                        ("balance_gradients", lambda m, v: sip.balance_gradients(m, x, steps=v)),
                        ("diagnose", lambda m, v: sip.diagnose(m, x, steps=v))):
        for value, label, was in ((0, "zero", "an empty list, blamed on calibrate"), (2.5, "fraction", "2 steps"),
                                  (True, "bool", "1 step")):
            row(f"{entry}-steps-{label}", entry, f"steps={value!r} (was {was})",
                lambda m, call=call, value=value: call(m, value), mlp,
                **raises(sip.OptionError, f"{entry}: steps must be an integer >= 1"))
    row("diagnose-steps-and-forward", "diagnose", "steps=2 and forward= (two time loops)",
        lambda m: sip.diagnose(m, x, steps=2, forward=lambda model, inp: model(inp)), mlp,
        **raises(sip.DiagnoseError, "give steps= (the model called once per step) or forward="))
    row("calibrate-tuple-input-with-steps", "calibrate", "example_input=(x,) (positional arguments) with steps=2",
        lambda m: sip.calibrate(m, (x,), steps=2, max_evaluations=3), mlp,
        **works("the tuple is the model's arguments at every step", lambda report, m: _two_layers(report)))
    row("diagnose-target-out-of-range", "diagnose", "class target 7 for 2 output classes",
        lambda m: sip.diagnose(m, x, target=torch.full((8,), 7)), mlp,
        **raises(sip.DiagnoseError, "class targets must lie in [0, 2)"))

    # underflow: a tiny threshold gives weights below the dtype's smallest number (was: all zeros written)
    row("initialize-float16-underflow", "initialize", "float16 model, θ = 1e-9, method='spike_aware'",
        lambda m: sip.initialize(m, "spike_aware", batch(torch.float16)),
        lambda: nn.Sequential(nn.Linear(4, 3), Spk(1e-9)).half(), **raises(sip.InitError, "underflows torch.float16"))
    row("spike_aware_-bfloat16-underflow", "spike_aware_", "a bfloat16 tensor, θ = 1e-42",
        lambda m: sip.spike_aware_(torch.empty(3, 4, dtype=torch.bfloat16), 1e-42),
        **raises(sip.InitError, "underflows torch.bfloat16"))

    # reports and replay: a report that is not one, a layer whose shape changed
    row("Report.load-truncated", "Report.load", "a truncated JSON file", lambda m: _load_text(_report_json()[:50]),
        **raises(sip.InitError, "is not a report's JSON"))
    for key, label, change, match in (
            ("list", "a JSON list", lambda d: [d], "the report must be a JSON object, got list"),
            ("missing-key", "no 'method'", lambda d: {k: v for k, v in d.items() if k != "method"}, "missing ['method']"),
            ("extra-key", "an unknown key 'x'", lambda d: {**d, "x": 1}, "unknown ['x']"),
            ("layer-not-object", "a layer that is a str", lambda d: {**d, "layers": ["0.weight"]},
             "report layer 0 must be a JSON object"),
            ("seed-str", "a layer's seed '5'", lambda d: _with_seed(d, "5"), "seed must be an integer, got '5'"),
            ("seed-float", "a layer's seed 1.5", lambda d: _with_seed(d, 1.5), "seed must be an integer, got 1.5")):
        row(f"Report.from_dict-{key}", "Report.from_dict", label,
            lambda m, change=change: sip.Report.from_dict(change(_report_dict())), **raises(sip.InitError, match))
    row("reinitialize-shape-changed", "reinitialize", "the report's layer 2 had 2 outputs, the model's has 7",
        lambda m: sip.reinitialize(m, sip.Report.from_dict(_report_dict()), x), _wider_second_layer,
        **raises(sip.InitError, "2.weight has fan_in 3 and fan_out 7, the report's 3 and 2: the layer's shape changed"))

    # parametrized weights: refused before anything reads them (reading runs the power iteration)
    for key, label in (("spectral-norm", "torch.nn.utils.parametrizations.spectral_norm"),
                       ("weight-norm", "torch.nn.utils.parametrizations.weight_norm"),
                       ("old-spectral-norm", "torch.nn.utils.spectral_norm (hooks)"),
                       ("old-weight-norm", "torch.nn.utils.weight_norm (hooks)")):
        calls = {"initialize": lambda m: sip.initialize(m, "ikun", x)}
        if key == "spectral-norm":
            calls.update({"plan": lambda m: sip.plan(m, x), "diagnose": lambda m: sip.diagnose(m, x),
                          "calibrate": lambda m: sip.calibrate(m, x)})
        for entry, call in calls.items():
            row(f"{entry}-{key}", entry, f"the first Linear wrapped in {label}", call,
                lambda key=key: parametrized_mlp(key),
                **raises(sip.PlanError, "0.weight computed by a parametrization (spectral_norm, weight_norm)"))

    # --- issue 29: the second outside attack ----------------------------------------------------------
    for entry, call in {"plan": lambda m: sip.plan(m, x), "initialize": lambda m: sip.initialize(m, "ikun", x),
                        "calibrate": lambda m: sip.calibrate(m, x), "diagnose": lambda m: sip.diagnose(m, x)}.items():
        row(f"{entry}-torchscript", entry, "a torch.jit.trace'd model (was a TypeError)", call, traced_mlp,
            **raises(sip.PlanError, "the model is a TorchScript module"))
    for key, label, change, match in (
            ("no-method", "settings without 'method' (was a KeyError)",
             lambda d: d["settings"].pop("method"), "need method as a JSON string, got nothing"),
            ("no-options", "settings without 'options' (was a KeyError)",
             lambda d: d["settings"].pop("options"), "need options as a JSON object, got nothing"),
            ("options-str", "settings' options a string (was a ValueError)",
             lambda d: d["settings"].update(options="ikun"), "need options as a JSON object, got str"),
            ("distribution-unknown-field", "a Uniform with a field 'x' (was a TypeError)",
             lambda d: d["settings"]["options"]["distribution"].update(x=0), "a Uniform holds the numbers"),
            ("distribution-unknown", "a distribution 'Cauchy' (was a KeyError)",
             lambda d: d["settings"]["options"]["distribution"].update(__distribution__="Cauchy"),
             "unknown distribution 'Cauchy'")):
        row(f"reinitialize-tampered-{key}", "reinitialize", label,
            lambda m, change=change: sip.reinitialize(m, _tampered_report(change), x), mlp,
            **raises(sip.InitError, match))
    row("Report.from_dict-seed-2**70", "Report.from_dict", "a layer's seed 2**70 (was a ValueError at replay)",
        lambda m: sip.Report.from_dict(_with_seed(_report_dict(), 2**70)),
        **raises(sip.InitError, "seed must lie in [0, 2**63)"))
    row("Report.load-deeply-nested", "Report.load", "a JSON nested 100 000 deep (was a RecursionError)",
        lambda m: _load_text("[" * 100_000 + "]" * 100_000), **raises(sip.InitError, "Report.load: RecursionError"))
    row("initialize-calibrated-empty-list", "initialize", "method='calibrated', example_input=[] (was an IndexError)",
        lambda m: sip.initialize(m, "calibrated", []), mlp, **raises(sip.InitError, "example_input is an empty list"))
    row("diagnose-empty-batch", "diagnose", "example_input with 0 rows (was blamed on the model)",
        lambda m: sip.diagnose(m, x[:0]), mlp, **raises(sip.DiagnoseError, "example_input has no elements"))
    row("initialize-overrides-int-key", "initialize", "overrides={0: {}} (was a TypeError)",
        lambda m: sip.initialize(m, "ikun", x, overrides={0: {}}), mlp,
        **raises(sip.OptionError, "overrides keys must be layer name patterns (str), got 0"))
    row("initialize-inference-tensor-weight", "initialize", "a weight made under torch.inference_mode() (was a "
        "RuntimeError)", lambda m: sip.initialize(m, "ikun", x), with_inference_weight,
        **raises(sip.PlanError, "0.weight made under torch.inference_mode()"))
    row("fluctuation_-no-kernel-sums", "fluctuation_", "no kernel_sums= (was a TypeError)",
        lambda m: sip.fluctuation_(torch.empty(3, 4), input_rate=0.1),
        **raises(sip.InitError, "fluctuation_: TypeError: calculate_fluctuation() missing 1 required keyword-only "
                                "argument: 'kernel_sums'"))
    row("fluctuation_-input-rate-5", "fluctuation_", "input_rate=5 (was accepted)",
        lambda m: sip.fluctuation_(torch.empty(3, 4), kernel_sums=(1.0, 1.0), input_rate=5),
        **raises(sip.OptionError, "input_rate must lie in [0, 1], got 5"))
    row("spike_aware_-input-scale-str", "spike_aware_", "input_scale='a' (was accepted)",
        lambda m: sip.spike_aware_(torch.empty(3, 4), 1.0, input_scale="a"),
        **raises(sip.OptionError, "input_scale must be a finite number, got 'a'"))
    row("baseline_-name-list", "baseline_", "name=['x'] (was a TypeError)",
        lambda m: sip.baseline_(torch.empty(3, 4), name=["x"]),
        **raises(sip.OptionError, "name must be a baseline's name (a str), got list"))

    for factor, way in ((1e300, "overflows"), (1e-300, "underflows")):
        row(f"scale-membrane-factor-{factor:g}", "scale_membrane", f"factor={factor:g} (was blamed on the dynamics)",
            with_lever(lambda m, f=factor: sip.scale_membrane(m, f, x, steps=2)), lever_mlp,
            **raises(sip.InitError, f"factor {factor:g} {way} torch.float32 in 0.weight"))
    row("balance-gradients-nan-loss", "balance_gradients", "a loss_fn returning NaN (was 'gradients explode')",
        with_lever(lambda m: sip.balance_gradients(m, x, steps=2, loss_fn=lambda out: out[0].sum() * math.nan)),
        lever_mlp, **raises(sip.InitError, "the loss is NaN on this batch"))

    # --- NeuronSpec ---------------------------------------------------------------------------------
    spec_rows = [
        ("threshold-none", "threshold=None", dict(threshold=None), "must be a number or a tensor"),
        ("threshold-str", "threshold='1'", dict(threshold="1"), "must be a number or a tensor"),
        ("threshold-nan", "threshold=nan", dict(threshold=float("nan")), "must be finite"),
        ("threshold-inf", "threshold=inf", dict(threshold=float("inf")), "must be finite"),
        ("threshold-tensor-nan", "threshold=tensor([1, nan])", dict(threshold=torch.tensor([1.0, float("nan")])),
         "non-finite values"),
        ("threshold-meta", "threshold on the meta device", dict(threshold=torch.tensor(1.0, device="meta")),
         "real tensor with data"),
        ("threshold-empty", "threshold=torch.empty(0)", dict(threshold=torch.empty(0)), "empty tensor"),
        ("beta-out-of-range", "beta=2", dict(threshold=1.0, beta=2.0), "beta must lie in [0, 1]"),
        ("reset-unknown", "reset='zero'", dict(threshold=1.0, reset="zero"), "reset must be one of"),
        ("surrogate-not-callable", "surrogate='atan'", dict(threshold=1.0, surrogate="atan"), "must be callable"),
    ]
    for key, label, kwargs, match in spec_rows:
        row(f"NeuronSpec-{key}", "NeuronSpec", label, lambda m, kwargs=kwargs: sip.NeuronSpec(**kwargs),
            **raises(sip.NeuronSpecError, match))
    row("NeuronSpec-threshold-float16", "NeuronSpec", "threshold=tensor(1.5, float16)",
        lambda m: sip.NeuronSpec(threshold=torch.tensor(1.5, dtype=torch.float16)),
        **works("it is stored as the float 1.5", lambda spec, m: _equals(spec.threshold, 1.5)))

    # --- register_neuron ----------------------------------------------------------------------------
    row("register_neuron-instance", "register_neuron", "a module instance instead of its class",
        lambda m: sip.register_neuron(Spk(), lambda n: None), **raises(sip.ArgumentTypeError, "cls must be an nn.Module subclass"))
    row("register_neuron-not-module", "register_neuron", "cls=int",
        lambda m: sip.register_neuron(int, lambda n: None), **raises(sip.ArgumentTypeError, "cls must be an nn.Module subclass"))
    row("register_neuron-to-spec-none", "register_neuron", "to_spec=None",
        lambda m: sip.register_neuron(Spk, None), **raises(sip.ArgumentTypeError, "to_spec must be callable"))
    row("register_neuron-internal-weights-not-callable", "register_neuron", "internal_weights=3",
        lambda m: sip.register_neuron(Spk, lambda n: None, internal_weights=3),
        **raises(sip.ArgumentTypeError, "internal_weights must be callable or None"))
    return table


# --- small helpers used by rows -----------------------------------------------------------------------
def _plif_with_nan_w():
    model = spikingjelly_model("ParametricLIFNode")
    with torch.no_grad():
        model[1].w.fill_(float("nan"))
    return model


def _snntorch_slstm():
    import snntorch as snn

    return nn.Sequential(nn.Linear(4, 3), snn.SLSTM(3, 3, init_hidden=True))


def weights_finite_in(model, dtype):
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())


def _fan_in_is(p, fan_in):
    assert [layer.fan_in for layer in p.layers] == [fan_in]


def _tied_plan(p, model):
    assert [(layer.name, layer.input_source) for layer in p.layers] == [("0.weight", "data")]
    assert any("also feeds 3" in note for note in p.notes)


def _two_layers(diagnosis):
    assert len(diagnosis.layers) == 2


def _warns_no_op(fill, shape):
    with pytest.warns(UserWarning, match="zero-element"):
        return fill(torch.empty(shape))


def _filled_frozen(result):
    assert torch.isfinite(result).all() and not result.requires_grad


def _equals(value, expected):
    assert value == expected


ROWS = rows()


# ------------------------------------------------------------------------------------------------------
# The test: one per row
# ------------------------------------------------------------------------------------------------------
def state(model) -> Dict[str, torch.Tensor]:
    if not isinstance(model, nn.Module):
        return {}
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()
               if not isinstance(v, nn.parameter.UninitializedTensorMixin)}  # a Lazy module's have no data
    return {k: v.detach().clone() if v.device.type != "meta" else v for k, v in tensors.items()}


def assert_unchanged(before: Dict[str, torch.Tensor], model) -> None:
    after = state(model)
    assert set(after) == set(before)
    for name, value in before.items():
        if value.device.type == "meta":
            continue
        assert torch.equal(value, after[name]) or (value.isnan() == after[name].isnan()).all() and \
            torch.equal(value.nan_to_num(), after[name].nan_to_num()), f"{name} changed although the call raised"


@pytest.mark.parametrize("row_id", [pytest.param(k, marks=r.marks, id=k) for k, r in ROWS.items()])
def test_bad_input(row_id):
    row = ROWS[row_id]
    model = row.model()
    before = state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if row.raises is not None:
            with pytest.raises(row.raises, match=re.escape(row.match)):
                row.call(model)
            assert_unchanged(before, model)
            return
        warnings.resetwarnings()  # rows that check a warning need it
        result = row.call(model)
    row.check(result, model)


def test_every_row_is_documented():
    """docs/bad_inputs.md lists exactly the rows tested here, with the same behaviour text."""
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))
    assert documented == set(ROWS), (sorted(set(ROWS) - documented), sorted(documented - set(ROWS)))
    for row_id, row in ROWS.items():
        assert row.behaviour in text, f"{row_id}: the behaviour in the doc differs from the test's"


def markdown_table() -> str:
    """The table of docs/bad_inputs.md (``python tests/test_bad_inputs.py`` prints it)."""
    lines = ["| row | entry point | bad input | behaviour |", "|---|---|---|---|"]
    for row_id, row in ROWS.items():
        note = ""
        for mark in row.marks:
            if mark.name == "xfail":
                note = f" **Today: wrong** ({mark.kwargs['reason']})."
        cell = row.behaviour.replace("|", "\\|") + note
        lines.append(f"| `{row_id}` | `{row.entry}` | {row.bad_input.replace('|', chr(92) + '|')} | {cell} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
