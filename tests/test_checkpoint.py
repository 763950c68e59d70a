"""Report checkpoints: save to JSON, load, and replay initialize bit for bit on a freshly built model."""
import json

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.apply import Report, reinitialize
from snn_initplug.theory import InitError
from user_neuron import MyLIF, register, unregister




@pytest.fixture(autouse=True)
def registered():
    register()
    yield
    unregister()


def build(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), MyLIF(), nn.Linear(24, 16), MyLIF(), nn.Linear(16, 8), MyLIF(),
                         nn.Linear(8, 3))


X = torch.rand(16, 12, generator=torch.Generator().manual_seed(0))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_equal_on(a, b, keys):
    for key in keys:
        assert torch.equal(a[key], b[key]), key


def test_save_load_replay_is_bit_identical(tmp_path):
    model = build(1)
    report = sip.initialize(model, "spike_aware", X, generator=torch.Generator().manual_seed(5), target_rate=0.2,
                            overrides={"4.weight": {"method": "ikun", "distribution": sip.surrogate.Uniform(-1, 1)}},
                            skip=["2.*"])
    path = tmp_path / "report.json"
    report.save(path)
    loaded = Report.load(path)
    assert loaded.to_dict() == report.to_dict()  # floats are written by repr: they load back exactly

    torch.manual_seed(99)  # the replay ignores the current random state
    fresh = build(2)  # another seed: every initialized weight differs before the replay
    assert not torch.equal(state(fresh)["0.weight"], state(model)["0.weight"])
    replayed = reinitialize(fresh, path, X)
    assert_equal_on(state(fresh), state(model), ["0.weight", "4.weight"])
    assert not torch.equal(state(fresh)["2.weight"], state(model)["2.weight"])  # skipped: left as built
    assert replayed.skipped == ["2.weight"] and replayed.layer("4").method == "ikun"
    assert [r.seed for r in replayed.layers] == [r.seed for r in report.layers]


def test_replay_from_the_global_rng_and_from_a_report_object():
    model = build(1)
    torch.manual_seed(3)
    report = sip.initialize(model, "fluctuation", X)  # no generator: seeds drawn from the global RNG
    fresh = build(2)
    reinitialize(fresh, report, X)
    assert_equal_on(state(fresh), state(model), ["0.weight", "2.weight", "4.weight"])


def test_json_is_human_readable(tmp_path):
    report = sip.initialize(build(1), "spike_aware", X, generator=torch.Generator().manual_seed(5),
                            overrides={"0.weight": {"sigma_u": 0.5}})
    path = tmp_path / "report.json"
    report.save(path)
    text = path.read_text()
    assert text.count("\n") > 20 and '  "method": "spike_aware"' in text  # indented, one field a line
    data = json.loads(text)
    settings = data["settings"]
    assert settings["method"] == "spike_aware" and settings["overrides"] == {"0.weight": {"sigma_u": 0.5}}
    assert settings["example_input"]["shapes"] == [[16, 12]] and len(settings["example_input"]["sha256"]) == 64
    assert all(isinstance(row["seed"], int) for row in data["layers"])


def test_calibrated_replays_start_and_calibration(tmp_path):
    model = build(1)
    report = sip.initialize(model, "calibrated", X, steps=4, target_rate=0.2, generator=torch.Generator().manual_seed(5))
    assert report.calibration is not None
    path = tmp_path / "calibrated.json"
    report.save(path)
    fresh = build(1)  # the rates depend on the biases too: the same biases, other weights
    with torch.no_grad():
        for index in (0, 2, 4):
            fresh[index].weight.normal_()
    replayed = reinitialize(fresh, path, X)
    assert_equal_on(state(fresh), state(model), ["0.weight", "2.weight", "4.weight"])
    assert [c.scale for c in replayed.calibration.layers] == [c.scale for c in report.calibration.layers]

    other = build(1)
    before = state(other)
    with pytest.raises(InitError, match="the law is|scales"):  # another batch: other statistics or scales
        reinitialize(other, path, torch.rand(16, 12))
    assert_equal_on(state(other), before, before.keys())  # left (or put back) as it was


def test_callable_skip_refuses_to_replay(tmp_path):
    report = sip.initialize(build(1), "spike_aware", X, skip=lambda layer: layer.name == "4.weight")
    path = tmp_path / "report.json"
    report.save(path)
    assert "__unserializable__" in path.read_text()
    fresh = build(2)
    before = state(fresh)
    with pytest.raises(InitError, match=r"cannot be replayed: skip\[0\] was function"):
        reinitialize(fresh, path, X)
    assert_equal_on(state(fresh), before, before.keys())


def test_replay_errors_are_clear(tmp_path):
    report = sip.initialize(build(1), "spike_aware", X)
    with pytest.raises(InitError, match="pass the same batch"):
        reinitialize(build(2), report)
    with pytest.raises(InitError, match="not the report's"):
        reinitialize(nn.Sequential(nn.Linear(12, 5), MyLIF()), report, X)
    with pytest.raises(InitError, match="records no settings"):
        reinitialize(build(2), Report("spike_aware", [], [], "example"), X)
    with pytest.raises(InitError, match="the law is"):
        reinitialize(build(2), report, X * 2)  # another batch: another measured E[x^2]
