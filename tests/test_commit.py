"""Nothing half-written, nothing silent (issue 14): the commit protocol of ``initialize`` and ``calibrate``.

Each test builds a situation where an old implementation wrote part of the model (or wrote nothing while
claiming success, or reseeded the process RNG, or let two threads corrupt one model) and checks, against the
model's own state before the call, that the package now leaves it unchanged and says why.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug import apply, calibration
from user_neuron import MyLIF, register, unregister


@pytest.fixture(autouse=True)
def registered():
    register()
    yield
    unregister()


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), MyLIF(), nn.Linear(6, 5), MyLIF(), nn.Linear(5, 3), MyLIF())


def batch() -> torch.Tensor:
    return torch.rand(16, 4, generator=torch.Generator().manual_seed(1)) * 2


def state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = state(model)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed"


def with_unwritable_third_layer(model: nn.Module) -> nn.Module:
    """Layer 4's weight is an expanded view: every element of a row is one memory location, so ``copy_`` into
    it raises after layers 0 and 2 were written (a late failing write, as a device error would be)."""
    model[4].weight = nn.Parameter(model[4].weight.detach()[:, :1].expand(3, 5))
    return model


# ------------------------------------------------------------------------------------------------------
# 2. the write loop is all or nothing
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ikun", "spike_aware", "calibrated"])
def test_an_unwritable_weight_is_refused_before_any_write(method):
    model = with_unwritable_third_layer(mlp())
    before = state(model)
    with pytest.raises(sip.InitError, match="4.weight has elements that share memory"):
        sip.initialize(model, method, batch(), max_evaluations=3) if method == "calibrated" else \
            sip.initialize(model, method, batch())
    assert_unchanged(before, model)


@pytest.mark.parametrize("method", ["ikun", "spike_aware"])
def test_a_write_failing_late_rolls_back_the_written_layers(method, monkeypatch):
    """Without the up-front check the third write fails inside the write loop; layers 0 and 2 are restored."""
    monkeypatch.setattr(apply, "check_writable", lambda *args: None, raising=False)
    model = with_unwritable_third_layer(mlp())
    before = state(model)
    with pytest.raises(RuntimeError, match="more than one element"):
        sip.initialize(model, method, batch())
    assert_unchanged(before, model)


@pytest.mark.parametrize("mode", ["chain", "model"])
def test_calibrate_write_failing_late_rolls_back(mode, monkeypatch):
    monkeypatch.setattr(calibration, "check_writable", lambda *args: None, raising=False)
    model = mlp()
    sip.initialize(model, "spike_aware", batch())
    with_unwritable_third_layer(model)
    before = state(model)
    with pytest.raises(RuntimeError, match="more than one element"):
        sip.calibrate(model, batch(), mode=mode, max_evaluations=3, bias="zero")
    assert_unchanged(before, model)


# ------------------------------------------------------------------------------------------------------
# 8. one model, one thread at a time
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("second", ["initialize", "calibrate", "diagnose", "plan"])
def test_a_second_thread_is_refused_while_the_first_holds_the_model(second):
    """Thread A's ``forward=`` waits inside the planning pass (hooks installed); thread B's call on the same
    model is refused, and A then finishes with exactly the weights of a call nobody interrupted."""
    import threading

    inside, release = threading.Event(), threading.Event()

    def slow_forward(model, x):
        inside.set()
        assert release.wait(10)
        return model(x)

    model, x = mlp(), batch()
    results: dict = {}

    def first():
        try:
            sip.initialize(model, "spike_aware", x, forward=slow_forward, generator=torch.Generator().manual_seed(3))
            results["ok"] = True
        except BaseException as exc:  # reported to the main thread
            results["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    calls = {"initialize": lambda: sip.initialize(model, "ikun", x), "diagnose": lambda: sip.diagnose(model, x),
             "calibrate": lambda: sip.calibrate(model, x, max_evaluations=2), "plan": lambda: sip.plan(model, x)}
    try:
        with pytest.raises(sip.ConcurrentUseError, match="used by another thread"):
            calls[second]()
    finally:
        release.set()
        thread.join(20)
    assert results == {"ok": True}
    alone = mlp()
    sip.initialize(alone, "spike_aware", x, generator=torch.Generator().manual_seed(3))
    assert_unchanged(state(alone), model)
    for module in model.modules():  # no hook of either call is left behind
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_the_guard_is_per_model_and_released_after_an_error():
    model = mlp()
    with pytest.raises(sip.OptionError):
        sip.initialize(model, "nope", batch())
    errors = []

    def other():
        try:
            sip.initialize(model, "ikun", batch())  # the failed call released the model
            sip.initialize(mlp(), "ikun", batch())  # another model is never blocked
        except BaseException as exc:
            errors.append(exc)

    import threading

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(20)
    assert errors == []
