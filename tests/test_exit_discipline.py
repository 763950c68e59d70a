"""Every way out of an entry point leaves the model exactly as it was (issue 29, part 1).

A forward pre-hook on every neuron counts the calls an entry point makes and raises ``KeyboardInterrupt`` at
call k, for every k from 1 to the number of calls an uninterrupted run makes: the interrupt propagates as it
is, and the whole state (parameters, buffers, every module attribute: thresholds, decays, hidden states), the
process RNG and the model's availability to the next call are bit for bit as before. ``SystemExit`` and
``GeneratorExit`` are raised at the middle call. A foreign exception inside the package (not the user's model)
is re-raised as the package's error, naming the entry point; the user's model's own exception passes as it is.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import snn_initplug as sip
from user_neuron import MyLIF, registered

pytestmark = pytest.mark.core_suite  # framework-free; see conftest.py


@pytest.fixture(autouse=True)
def lever_registered():
    with registered(threshold_lever=True):
        yield


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), MyLIF(), nn.Linear(6, 6), MyLIF(), nn.Linear(6, 3), MyLIF())


class Product(nn.Module):
    """A weight-less neuron ``c`` fed by the product of two neurons' spikes (attention's q·k, in small)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(6, 8), MyLIF(), MyLIF(), MyLIF()

    def forward(self, x):
        return self.c(3.0 * self.a(self.fc1(x)) * self.b(self.fc2(x)))


def batch(features: int = 4) -> torch.Tensor:
    return torch.rand(16, features, generator=torch.Generator().manual_seed(1)) * 2


@functools.lru_cache(maxsize=None)
def _report_of_a_real_call() -> sip.Report:
    """A report saved from a real call (made once, outside the interrupted calls: it draws from the RNG)."""
    model = mlp()
    return sip.Report.from_dict(json.loads(sip.initialize(model, "spike_aware", batch(),
                                                          generator=torch.Generator().manual_seed(3)).to_json()))


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module], Any]]] = {
    "plan": (mlp, lambda m: sip.plan(m, batch())),
    "initialize-ikun": (mlp, lambda m: sip.initialize(m, "ikun", batch())),
    "initialize-spike_aware": (mlp, lambda m: sip.initialize(m, "spike_aware", batch())),
    "initialize-calibrated-chain": (mlp, lambda m: sip.initialize(m, "calibrated", batch(), steps=2,
                                                                  max_evaluations=3, bias="zero")),
    "initialize-calibrated-model": (mlp, lambda m: sip.initialize(m, "calibrated", batch(), steps=2,
                                                                  max_evaluations=3, mode="model", bias="zero")),
    "calibrate-chain": (mlp, lambda m: sip.calibrate(m, batch(), steps=2, max_evaluations=3, bias="zero")),
    "calibrate-model": (mlp, lambda m: sip.calibrate(m, batch(), steps=2, max_evaluations=3, mode="model")),
    "calibrate-weightless-threshold": (Product, lambda m: sip.calibrate(m, batch(6), 0.2, max_evaluations=3,
                                                                       weightless="threshold")),
    "scale_membrane": (mlp, lambda m: sip.scale_membrane(m, 0.5, batch(), steps=2)),
    "balance_gradients": (mlp, lambda m: sip.balance_gradients(m, batch(), steps=2, bounds=(0.25, 4))),
    "diagnose": (mlp, lambda m: sip.diagnose(m, batch(), target=torch.zeros(16, dtype=torch.long))),
    "reinitialize": (mlp, lambda m: sip.reinitialize(m, _report_of_a_real_call(), batch())),
}


def whole_state(model: nn.Module) -> dict[str, Any]:
    """Every tensor (cloned) and every other attribute of every module, by name."""
    state: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if isinstance(value, dict):
                for inner, item in value.items():
                    state[f"{prefix}.{key}.{inner}"] = item.detach().clone() if isinstance(item, torch.Tensor) else item
            else:
                state[f"{prefix}.{key}"] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    for name, param in model.named_parameters():
        state[f"{name}:requires_grad"] = param.requires_grad
        state[f"{name}:grad"] = param.grad
    return state


def assert_same_state(before: dict[str, Any], model: nn.Module, where: str) -> None:
    after = whole_state(model)
    assert before.keys() == after.keys(), (where, sorted(before.keys() ^ after.keys()))
    for key, value in before.items():
        now = after[key]
        if isinstance(value, torch.Tensor):
            assert isinstance(now, torch.Tensor) and value.dtype == now.dtype and value.shape == now.shape, (where, key)
            assert torch.equal(value.view(-1).view(torch.uint8) if value.dim() else value.reshape(1).view(torch.uint8),
                               now.view(-1).view(torch.uint8) if now.dim() else now.reshape(1).view(torch.uint8)), \
                (where, key)  # bitwise
        elif isinstance(value, float) and math.isnan(value):
            assert isinstance(now, float) and math.isnan(now), (where, key)
        else:
            assert now is value or now == value, (where, key, value, now)


def neuron_calls(model: nn.Module, interrupt_at: int = 0, exception: type[BaseException] = KeyboardInterrupt):
    """Count every neuron call; raise ``exception`` at call ``interrupt_at`` (0: never). Returns the counter."""
    calls = [0]

    def hook(module, args):
        calls[0] += 1
        if calls[0] == interrupt_at:
            raise exception("interrupted by the test")

    for module in model.modules():
        if isinstance(module, MyLIF):
            module.register_forward_pre_hook(hook)
    return calls


def interrupted(case: str, k: int, exception: type[BaseException]) -> None:
    _report_of_a_real_call()
    build, call = CASES[case]
    model = build()
    neuron_calls(model, k, exception)
    before, rng = whole_state(model), torch.get_rng_state()
    with pytest.raises(exception, match="interrupted by the test"):
        call(model)
    assert_same_state(before, model, f"{case}, {exception.__name__} at neuron call {k}")
    assert torch.equal(rng, torch.get_rng_state()), f"{case}: the process RNG moved"
    sip.plan(model, batch(6) if build is Product else batch())  # the model is free for the next call


@pytest.mark.parametrize("case", list(CASES))
def test_an_interrupt_at_every_model_call_leaves_the_model_as_it_was(case):
    build, call = CASES[case]
    model = build()
    total = neuron_calls(model)
    call(model)
    assert total[0] >= 2, case
    for k in range(1, total[0] + 1):
        interrupted(case, k, KeyboardInterrupt)


@pytest.mark.parametrize("exception", [SystemExit, GeneratorExit])
@pytest.mark.parametrize("case", list(CASES))
def test_other_ways_out_leave_the_model_as_it_was(case, exception):
    build, call = CASES[case]
    model = build()
    total = neuron_calls(model)
    call(model)
    interrupted(case, (total[0] + 1) // 2, exception)


def test_a_model_error_passes_as_it_is_and_the_model_is_restored():
    """The user's model raising is the user's error: not wrapped, and nothing is left half-written."""
    class Broken(Exception):
        pass

    model = mlp()
    calls = [0]

    def breaks(module, args):
        calls[0] += 1
        if calls[0] == 5:
            raise Broken("the model's own error")

    model[3].register_forward_pre_hook(breaks)
    before = whole_state(model)
    with pytest.raises(Broken):
        sip.calibrate(model, batch(), steps=2, max_evaluations=3, mode="model")
    assert_same_state(before, model, "Broken at call 5")


def test_a_foreign_error_inside_the_package_is_the_package_error_naming_the_entry_point(monkeypatch):
    """A bug inside the package (simulated: the rate count replaced by a builtin that takes numbers, so the
    TypeError is raised in the package's own frame) is not the user's model's: it is the
    package's error, naming the entry point, chained to the cause, and the model is restored."""
    from snn_initplug.calibration import search

    monkeypatch.setattr(search, "spike_rate", math.hypot)
    model = mlp()
    before = whole_state(model)
    with pytest.raises(sip.InitError, match="calibrate: TypeError") as raised:
        sip.calibrate(model, batch(), steps=2, max_evaluations=3, mode="model")
    assert isinstance(raised.value.__cause__, TypeError)
    assert_same_state(before, model, "wrapped error")


def test_the_command_line_reports_an_interrupt_in_one_line(monkeypatch, capsys):
    """Ctrl-C during a command: one line on stderr and the shell's status 130, no traceback."""
    from snn_initplug import cli

    def interrupted_command(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_surrogates", interrupted_command)
    assert cli.main(["surrogates"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "snn-initplug surrogates: interrupted"


class _Copies(TorchDispatchMode):
    """Counts the full copies (``clone``) made of each weight: the rollback's memory, in copies of the model."""

    def __init__(self, weights):
        super().__init__()
        self.sizes = {w.numel() for w in weights}
        self.clones = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.clone.default and args[0].numel() in self.sizes:
            self.clones += 1
        return out


@pytest.mark.parametrize("method, copies_per_weight", [("ikun", 1), ("spike_aware", 1), ("calibrated", 3), ("auto", 4)])
def test_the_rollback_holds_one_copy_of_each_weight(method, copies_per_weight):
    """The entry point's state (the guard's copy) is the rollback of the inner all-or-nothing writes too: one
    clone per weight, not one per layer of protection (a 100 M-parameter model is not copied twice). The
    calibration adds two it works with: the start's weights (a chain search redone in model mode restarts from
    them) and the search's base weights (each trial writes base × scale); the one call on this 2-layer chain adds
    the membrane ×0.5, whose compare-and-undo keeps the calibrated weights (the one call goes on without the
    scaling when the spikes would change)."""
    model = nn.Sequential(nn.Linear(4, 40), MyLIF(), nn.Linear(40, 30), MyLIF())
    weights = [model[0].weight, model[2].weight]
    before = [w.detach().clone() for w in weights]
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(0)) * 2
    with _Copies(weights) as copies:
        sip.initialize(model, x, method, **({"steps": 2} if method == "auto" else {}))
    assert any(not torch.equal(w, b) for w, b in zip(weights, before))  # it did write
    assert copies.clones == copies_per_weight * len(weights), copies.clones
