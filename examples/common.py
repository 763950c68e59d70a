"""Shared plumbing for the example scripts: command-line flags, device, progress bars, the one
``snn_initplug.initialize`` call, SpikingJelly backend selection, and the results folder (metrics.json + plots).

The training loops themselves live in each example, written in that framework's own idiom.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # so ``import data`` works however the script is started
    sys.path.insert(0, str(HERE))

import data  # noqa: E402  (examples/data.py)
import cupy_doctor  # noqa: E402  (examples/cupy_doctor.py)
from arguments import (OneLineParser, count, init_option, non_negative_float, positive_float,  # noqa: E402
                       positive_int)


def init_choices() -> List[str]:
    import snn_initplug.apply

    return ["none", *snn_initplug.apply.METHODS]


def base_parser(description: str, *, T: int, batch: int, epochs: int, lr: float, out: str,
                subset: Optional[int] = None, opt: str = "adam", single_init: bool = True) -> argparse.ArgumentParser:
    """The flags every example takes (single-dash long options, as in SpikingJelly's own examples).

    Values are checked while parsing (``-T 0``, ``-b -3``: one line, exit status 2, nothing computed first).
    ``single_init=False`` leaves out ``-init``/``-init-opt``, for a script that compares several methods."""
    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-T", type=positive_int, default=T, help="simulation time steps")
    p.add_argument("-b", type=positive_int, default=batch, help="batch size")
    p.add_argument("-epochs", type=positive_int, default=epochs, help="training epochs")
    p.add_argument("-lr", type=positive_float, default=lr, help="learning rate")
    p.add_argument("-opt", choices=["adam", "sgd"], default=opt, help="optimizer (sgd uses momentum 0.9)")
    p.add_argument("-momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    p.add_argument("-data-dir", default=None,
                   help=f"folder with the IDX files or torchvision's layout; default $SNN_INITPLUG_DATA or "
                        f"{data.default_data_dir()}")
    p.add_argument("-no-download", action="store_true", help="never try a torchvision download")
    p.add_argument("-device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 ('auto': cuda if available)")
    if single_init:
        p.add_argument("-init", default="auto", choices=init_choices(),
                       help="weight initialization applied with snn_initplug.initialize ('auto': the one call, the "
                            "recipe for this model; 'none': the framework's own)")
        p.add_argument("-init-opt", action="append", default=[], metavar="KEY=VALUE", type=init_option,
                       help="option for the init method, repeatable (e.g. -init-opt sigma_u=0.8 -init-opt steps=4)")
    p.add_argument("-out-dir", default=None, help=f"results folder (default runs/{out}-<init>-seed<seed>)")
    p.add_argument("-seed", type=count, default=0, help="seed for weights, encoding and batch order")
    p.add_argument("-subset", type=count, default=subset, help="random training subset size (0 or omitted: all)")
    p.add_argument("-subset-seed", type=count, default=42, help="seed of the training/test subset choice")
    p.add_argument("-test-subset", type=count, default=None, help="random test subset size (0 or omitted: all)")
    p.add_argument("-threads", type=positive_int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("-quiet", action="store_true", help="no progress bars")
    p.add_argument("-no-plots", action="store_true", help="write metrics.json only")
    p.add_argument("-stop-at", type=positive_float, default=None,
                   help="stop once the test accuracy reaches this value (used by benchmarks/convergence.py)")
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"-device {name}: CUDA is not available on this machine (use -device cpu)")
    return device


def start(args) -> torch.device:
    """What every example does first: ``-threads``, the seeds, then the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    return select_device(args.device)


def progress(iterable: Iterable, quiet: bool = False, **kwargs):
    """One pass over ``iterable``, with a tqdm bar when installed (the ``examples`` extra) and not ``quiet``.

    The iterator is made here, exactly once, bar or not: tqdm.auto's asyncio class calls ``iter()`` on what it
    wraps, and each DataLoader iterator draws a seed from the loader's generator (or the global RNG), so a bar
    would otherwise change the batch order and the rate coding of a seeded run.
    """
    iterator = iter(iterable)
    if quiet:
        return iterator
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterator
    total = len(iterable) if hasattr(iterable, "__len__") else None
    return tqdm(iterator, total=total, leave=False, dynamic_ncols=True, **kwargs)


def set_postfix(bar, **values) -> None:
    if hasattr(bar, "set_postfix"):
        bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in values.items()}, refresh=False)


def load_data(args, dataset: str):
    """The dataset by the flags' search order; no source at all is a one-line exit saying what to install."""
    try:
        return data.load(dataset, args.data_dir, subset=args.subset, test_subset=args.test_subset,
                         seed=args.subset_seed, download=not args.no_download)
    except data.DataNotFound as exc:
        raise SystemExit(f"error: {exc}") from None


def loaders(args, x_tr, y_tr, x_te, y_te, *, drop_last: bool = False):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(args.seed)
    train = DataLoader(TensorDataset(x_tr, y_tr), batch_size=args.b, shuffle=True, drop_last=drop_last and
                       len(x_tr) >= args.b, generator=g)
    test = DataLoader(TensorDataset(x_te, y_te), batch_size=max(args.b, 256), shuffle=False)
    return train, test


def initialize(model: torch.nn.Module, method: str, example_input: Any, seed: int,
               forward: Optional[Callable] = None, defaults: Optional[Dict[str, Dict[str, Any]]] = None,
               **options) -> str:
    """One ``snn_initplug.initialize`` call (or nothing for ``none``); prints and returns the report.

    ``defaults`` holds per-method options the example needs (e.g. ``{"fluctuation": {"steps": T}}`` for IF
    neurons, whose stationary kernel sums are infinite); ``options`` (from ``-init-opt``) override them.
    """
    import snn_initplug

    options = {**(defaults or {}).get(method, {}), **options}
    if method == "none":
        text = "init: none (the framework's own initialization is left as it is)"
    else:
        t0 = time.perf_counter()
        report = snn_initplug.initialize(model, method, example_input, forward=forward,
                                         generator=torch.Generator().manual_seed(seed), **options)
        given = f", options {options}" if options else ""
        text = f"init: {method}{given} ({time.perf_counter() - t0:.2f} s)\n{report}"
    # what the network does at init, before any training: firing, membrane and surrogate support per layer
    text += f"\n\ndiagnostics at init:\n{snn_initplug.diagnose(model, example_input, forward=forward)}"
    print(text, flush=True)
    return text


# ----------------------------------------------------------------------------------------------------------
# SpikingJelly: version features and backends
# ----------------------------------------------------------------------------------------------------------
def sj_prepare_env(backend: str) -> None:
    """SpikingJelly 2.x reads SJ_<NEURON>_CUDA_IMPLEMENTATION when it is imported: ``-backend torch`` on CUDA
    forces the torch reference there (call before importing spikingjelly; ignored by 0.0.0.0.14)."""
    if backend == "torch":
        for n in ("IF", "LIF"):
            os.environ.setdefault(f"SJ_{n}_CUDA_IMPLEMENTATION", "torch")


def sj_start(args) -> torch.device:
    """The SpikingJelly examples' start: the backend's environment (before the import), a clear exit without
    SpikingJelly, :func:`start`, and the version in use."""
    sj_prepare_env(args.backend)
    try:
        import spikingjelly.activation_based  # noqa: F401
    except ImportError:
        raise SystemExit("SpikingJelly is not installed: pip install snn-initplug[spikingjelly]")
    device = start(args)
    print(f"[spikingjelly] version {sj_version()}")
    return device


def sj_backend(neuron_cls, requested: str, device: torch.device) -> Dict[str, Any]:
    """Neuron keyword arguments for ``-backend torch|cupy|auto`` (multi-step neurons); prints the choice."""
    name = neuron_cls.__name__
    if cupy_doctor.legacy_api(neuron_cls):  # 0.0.0.0.14: torch or cupy, chosen per neuron
        diagnosis = cupy_doctor.cupy_diagnosis(check_kernel=device.type == "cuda")
        cupy_problem = None if diagnosis["usable"] else diagnosis["message"]
        has_cupy = cupy_problem is None
        if requested == "cupy":
            if device.type != "cuda":
                raise SystemExit("-backend cupy needs a CUDA device (-device cuda); on CPU use -backend torch or auto")
            if not has_cupy:
                raise SystemExit(f"-backend cupy: CuPy cannot be used: {cupy_problem} "
                                 "`python benchmarks/gpu_check.py --parts e` explains more. Or run with -backend torch / auto")
            choice = "cupy"
        elif requested == "auto":
            choice = "cupy" if device.type == "cuda" and has_cupy else "torch"
        else:
            choice = "torch"
        alias = cupy_doctor.legacy_cupy_numpy_alias() if choice == "cupy" else None
        if alias:
            print(f"[spikingjelly] {alias}")
        print(f"[spikingjelly] legacy API (0.0.0.0.14 style): {name}(step_mode='m', backend={choice!r})"
              + (f" (CuPy not usable: {cupy_problem})" if requested == "auto" and device.type == "cuda" and not has_cupy
                 else ""))
        return {"backend": choice}
    # 2.x: no backend argument; CUDA picks native > Triton > torch by itself
    if requested == "cupy":
        raise SystemExit("-backend cupy: this SpikingJelly (2.x) has no CuPy backend; on CUDA it uses Triton "
                         "automatically. Use -backend auto (or torch to force the reference implementation)")
    impl = "torch (CPU)"
    try:
        from spikingjelly.activation_based import functional

        if hasattr(functional, "neuron_implementation"):
            kind = {"IFNode": "if", "LIFNode": "lif"}.get(name)
            if kind:
                impl = functional.neuron_implementation(kind, device)["implementation"]
    except Exception as exc:  # noqa: BLE001
        impl = f"unknown ({type(exc).__name__}: {exc})"
    print(f"[spikingjelly] 2.x API: no backend argument; {name} on {device} uses implementation {impl!r}")
    return {}


def sj_version() -> str:
    try:
        from importlib.metadata import version

        return version("spikingjelly")
    except Exception:  # noqa: BLE001 - e.g. the PYTHONPATH overlay has its own dist-info
        return "unknown"


# ----------------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------------
class History:
    """Per-epoch metrics, wall time, and the init report; ``save`` writes metrics.json and the PNG plots."""

    def __init__(self, example: str, args, report: str = ""):
        self.t0 = time.perf_counter()
        self.train_time = 0.0
        self.record: Dict[str, Any] = {
            "example": example,
            "args": {k: v for k, v in vars(args).items()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "init_report": report,
            "epochs": [],
        }

    def add_step(self, bar=None, *, loss: float, acc: float) -> None:
        """Record the epoch's running training loss and accuracy after one more step (and show them on ``bar``),
        so that even a one-epoch run plots a curve."""
        steps = self.record.setdefault("steps", [])
        steps.append({"step": len(steps) + 1, "train_loss": loss, "train_acc": acc})
        set_postfix(bar, loss=loss, acc=acc)

    def add_epoch(self, epoch: int, train_loss: float, train_acc: float, test_loss: float, test_acc: float,
                  train_seconds: float) -> Dict[str, Any]:
        self.train_time += train_seconds
        row = {"epoch": epoch, "step": len(self.record.get("steps", [])), "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
               "test_acc": test_acc, "epoch_train_time": train_seconds, "train_time": self.train_time,
               "wall_time": time.perf_counter() - self.t0}
        self.record["epochs"].append(row)
        print(f"epoch {epoch:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"test loss {test_loss:.4f} acc {test_acc:.4f}  ({train_seconds:.1f} s train, "
              f"{row['wall_time']:.1f} s total)", flush=True)
        return row

    def reached(self, target: Optional[float]) -> bool:
        """True when ``target`` is set and the last epoch's test accuracy reached it."""
        rows = self.record["epochs"]
        return target is not None and bool(rows) and rows[-1]["test_acc"] >= target

    def save(self, out_dir: Path, plots: bool = True) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = self.record["epochs"]
        self.record["wall_time"] = time.perf_counter() - self.t0
        self.record["best_test_acc"] = max((r["test_acc"] for r in rows), default=None)
        with open(out_dir / "metrics.json", "w") as f:
            json.dump(self.record, f, indent=2, default=str)
        if plots and rows:
            plot_curves(rows, self.record.get("steps", []), out_dir,
                        title=f"{self.record['example']} (init {self.record['args'].get('init')})")
        print(f"results: {out_dir}")
        return out_dir


def pyplot():
    """matplotlib's pyplot drawing into files (the Agg backend), or None, said in one line, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install snn-initplug[examples])")
        return None
    return plt


def plot_curves(rows: List[Dict[str, Any]], steps: List[Dict[str, Any]], out_dir: Path, title: str = "") -> None:
    """``loss.png`` and ``acc.png`` against the training step: the running training value of each step (when the
    loop recorded steps) and the test value at the end of each epoch."""
    plt = pyplot()
    if plt is None:
        return
    for key, ylabel in (("loss", "loss"), ("acc", "accuracy")):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if steps:
            ax.plot([s["step"] for s in steps], [s[f"train_{key}"] for s in steps], "-", lw=1,
                    label="train (running mean of the epoch)")
            ax.plot([r["step"] for r in rows], [r[f"test_{key}"] for r in rows], "s-", label="test (end of epoch)")
            ax.set_xlabel("training step")
        else:
            ax.plot([r["epoch"] for r in rows], [r[f"train_{key}"] for r in rows], "o-", label="train")
            ax.plot([r["epoch"] for r in rows], [r[f"test_{key}"] for r in rows], "s-", label="test")
            ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / f"{key}.png", dpi=110)
        plt.close(fig)


def out_dir_for(args, name: str) -> Path:
    return Path(args.out_dir) if args.out_dir else Path("runs") / f"{name}-{args.init}-seed{args.seed}"


def make_optimizer(args, params):
    if args.opt == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    return torch.optim.Adam(params, lr=args.lr)
