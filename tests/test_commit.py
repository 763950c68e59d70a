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
    with pytest.raises(sip.InitError, match="initialize: RuntimeError: .*more than one element") as raised:
        sip.initialize(model, method, batch())
    assert isinstance(raised.value.__cause__, RuntimeError)  # torch's error, wrapped by the entry point
    assert_unchanged(before, model)


@pytest.mark.parametrize("mode", ["chain", "model"])
def test_calibrate_write_failing_late_rolls_back(mode, monkeypatch):
    monkeypatch.setattr(calibration.commit, "check_writable", lambda *args: None, raising=False)
    model = mlp()
    sip.initialize(model, "spike_aware", batch())
    with_unwritable_third_layer(model)
    before = state(model)
    with pytest.raises(sip.InitError, match="calibrate: RuntimeError: .*more than one element"):
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


# ------------------------------------------------------------------------------------------------------
# 7. the process RNG
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["chain", "model"])
def test_calibrate_does_not_reseed_the_process_rng_for_a_model_that_draws_nothing(mode):
    """Every forward pass of the search sees the process RNG exactly as the caller left it (another thread
    drawing from it meanwhile would get its own stream, not rewound seeded draws), and it is unchanged after."""
    seen = []

    class Probe(nn.Module):  # an identity that looks at the process RNG whenever the search runs it
        def forward(self, x):
            seen.append(torch.get_rng_state())
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Probe(), MyLIF(), nn.Linear(6, 5), MyLIF())
    sip.initialize(model, "spike_aware", batch())
    torch.manual_seed(1234)
    torch.rand(5)  # a state no seed gives directly
    before = torch.get_rng_state()
    seen.clear()
    sip.calibrate(model, batch(), mode=mode, max_evaluations=4, seed=0)
    assert seen and all(torch.equal(state_, before) for state_ in seen)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_model_that_draws_sees_the_same_draws_at_every_evaluation():
    """Dropout in training mode: each evaluation is seeded from ``seed`` (so two calibrations agree, and a
    different seed gives different draws), and the process RNG is restored afterwards."""
    def run(seed):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), MyLIF(), nn.Linear(32, 16), MyLIF())
        sip.initialize(model, "spike_aware", batch(), generator=torch.Generator().manual_seed(0))
        state_before = torch.get_rng_state()
        report = sip.calibrate(model, batch(), mode="model", max_evaluations=6, seed=seed)
        assert torch.equal(torch.get_rng_state(), state_before)
        return [c.scale for c in report.layers], [c.rate for c in report.layers]

    assert run(7) == run(7)
    # the rates at the found scales come from seeded dropout masks: rerun by hand with manual_seed(7)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), MyLIF(), nn.Linear(32, 16), MyLIF())
    sip.initialize(model, "spike_aware", batch(), generator=torch.Generator().manual_seed(0))
    scales, rates = run(7)
    with torch.no_grad():
        model[0].weight.mul_(scales[0])
        model[3].weight.mul_(scales[1])
        torch.manual_seed(7)
        out = model[2](model[1](model[0](batch())))
    assert out.mean().item() == pytest.approx(rates[0], abs=1e-12)


def test_the_report_says_when_evaluations_were_seeded():
    """Seeding inside fork_rng is the one thing that touches the process RNG (shared by every thread): the
    report says so for a model that draws, and says nothing for one that does not."""
    torch.manual_seed(0)
    drawing = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), MyLIF(), nn.Linear(32, 16), MyLIF())
    quiet = nn.Sequential(nn.Linear(4, 32), MyLIF(), nn.Linear(32, 16), MyLIF())
    for model in (drawing, quiet):
        sip.initialize(model, "spike_aware", batch(), generator=torch.Generator().manual_seed(0))
    notes = sip.calibrate(drawing, batch(), mode="model", max_evaluations=6, seed=3).notes
    assert any("draws random numbers" in n and "seed=3" in n for n in notes), notes
    assert not any("draws random numbers" in n for n in sip.calibrate(quiet, batch(), max_evaluations=6).notes)


@pytest.mark.parametrize("mode", ["chain", "model"])
def test_another_thread_drawing_during_calibrate_keeps_its_stream_and_no_note_claims_the_model_draws(mode):
    """Issue 29: a thread drawing from the process RNG while a model that draws nothing is calibrated. The
    draws are watched per thread, so that thread's draws are not taken for the model's: the RNG is never
    reseeded (no draw of that thread repeats: a reseeded stream would give the same vectors again and again)
    and no note says the model draws."""
    import threading
    import time

    class Slow(nn.Module):  # an identity that lets the other thread run during every pass
        def forward(self, x):
            time.sleep(0.002)
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Slow(), MyLIF(), nn.Linear(6, 5), MyLIF())
    sip.initialize(model, "spike_aware", batch(), generator=torch.Generator().manual_seed(0))
    drawn, stop = [], threading.Event()

    def draw():
        while not stop.is_set():
            drawn.append(tuple(torch.rand(8).tolist()))
            time.sleep(0.0005)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        report = sip.calibrate(model, batch(), mode=mode, max_evaluations=6, seed=0)
    finally:
        stop.set()
        thread.join(20)
    assert len(drawn) >= 2  # the thread drew while the calibration ran (its passes sleep to let it)
    assert len(set(drawn)) == len(drawn), "the other thread's stream was reseeded"
    assert not any("draws random numbers" in n for n in report.notes), report.notes


def test_an_initialize_error_leaves_the_process_rng_where_it_was():
    """generator=None draws the per-layer seeds from the process RNG; when the call fails after that (here the
    calibration of method='calibrated' refuses mode='chain' with a forward=), the draw is undone."""
    model = mlp()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with pytest.raises(sip.InitError, match="mode='chain'"):
        sip.initialize(model, "calibrated", batch(), mode="chain", forward=lambda m, x: m(x))
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------------------------
# 4. chain mode checks its shortcut
# ------------------------------------------------------------------------------------------------------
class ClippedLinear(nn.Linear):
    """A Linear whose forward clips its weight: its output is not linear in the weight's scale."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight.clamp(-0.05, 0.05), self.bias)


def real_rates(model: nn.Module, x: torch.Tensor) -> list:
    """Each neuron's rate in one plain forward pass of the calibrated model (from rest)."""
    outputs = []
    handles = [m.register_forward_hook(lambda m, a, out: outputs.append(out.detach()))
               for m in model if isinstance(m, MyLIF)]
    with torch.no_grad():
        for m in model:
            if isinstance(m, MyLIF):
                m.u = torch.zeros(())
        model(x)
    for h in handles:
        h.remove()
    return [(o > 0.5).double().mean().item() for o in outputs]  # spikes counted: a ratio of integers


def hooked() -> nn.Sequential:
    model = mlp()[:4]
    model[0].register_forward_hook(lambda m, a, out: out + 5.0)
    return model


def clipped() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(ClippedLinear(4, 6), MyLIF(), nn.Linear(6, 5), MyLIF())


@pytest.mark.parametrize("build", [hooked, clipped])
def test_a_hook_or_a_weight_layer_subclass_sends_auto_to_model_mode(build):
    model, x = build(), batch()
    report = sip.calibrate(model, x, target_rate=0.2, max_evaluations=12)
    assert report.mode == "model"
    with pytest.raises(sip.InitError, match="mode='chain' needs"):
        sip.calibrate(build(), x, mode="chain")


@pytest.mark.parametrize("build", [hooked, clipped])
def test_the_reported_rates_are_the_rates_the_model_produces(build):
    model, x = build(), batch()
    report = sip.calibrate(model, x, target_rate=0.2, max_evaluations=12)
    assert [c.rate for c in report.layers] == pytest.approx(real_rates(model, x), abs=1e-12)


def test_chain_rates_are_checked_by_a_real_pass(monkeypatch):
    """With the up-front detection switched off, the chain search believes the hooked layer is affine; the
    check by a real forward pass sees the difference and the search is redone in model mode."""
    monkeypatch.setattr(calibration.chain, "_chain_obstacle", lambda model: None)
    model, x = hooked(), batch()
    report = sip.calibrate(model, x, target_rate=0.2, max_evaluations=12)
    assert report.mode == "model"
    assert any("recalibrated in model mode" in note for note in report.notes), report.notes
    assert [c.rate for c in report.layers] == pytest.approx(real_rates(model, x), abs=1e-12)


def test_a_plain_chain_passes_its_check():
    model, x = mlp(), batch()
    sip.initialize(model, "spike_aware", x)
    report = sip.calibrate(model, x, target_rate=0.2, max_evaluations=12)
    assert report.mode == "chain" and not any("recalibrated" in n for n in report.notes)
    assert [c.rate for c in report.layers] == pytest.approx(real_rates(model, x), abs=1e-12)
