"""Does a principled init make the models people train today train better? Fashion-MNIST, a fixed budget.

    python benchmarks/real_models.py                                  # the full comparison (hours on a CPU)
    python benchmarks/real_models.py --models csnn --seeds 0 --train 512 --test 256 --epochs 1   # a smoke run

For each architecture, method and seed: the model is built from the seed, initialized (``default`` leaves the
framework's own init), its firing rates at init are measured on one training batch (lowest / median / highest
over the neuron layers, and how many layers are silent, < 0.001), then it is trained for a fixed budget (Adam,
``--lr``, ``--epochs`` over a fixed ``--train`` subset of Fashion-MNIST's training set, batch ``--batch``) and
tested on a fixed ``--test`` subset of the test set. Printed per architecture and method: test accuracy, mean and
per seed, the init rates and the seconds ``initialize`` took. Data from ``examples/data.py`` (Debian's
``/usr/share/datasets/fashion-mnist`` offline). Architectures (SpikingJelly, multi-step):

* ``sew_resnet18``: the zoo's SEW ResNet-18 (``LIFNode``, ADD, T = 2; the 28 x 28 image resized to 32 x 32 x 3);
* ``spiking_resnet18_nobn``: the zoo's Spiking ResNet-18 with every BatchNorm replaced by the identity (``LIFNode``,
  T = 2, 32 x 32 x 3): identity residual sums into a neuron, no normalization;
* ``spikformer``: the shipped Spikformer scaled down (T = 2, 28 x 28, patch 4, 64 dims, 4 heads, 2 blocks);
* ``csnn``: the IKUN CSNN example (``examples/spikingjelly_fmnist_csnn.py``, Conv-BN-IF, 16 channels, T = 4).
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn as nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "examples"))

import builders  # noqa: E402  (benchmarks/builders.py)
import snn_initplug as sip  # noqa: E402

METHODS = ["default", "ikun", "spike_aware", "fluctuation", "calibrated"]


def sew_resnet18():
    return builders.TimeMajor(builders.sew_resnet18(), 2), {}


def spiking_resnet18_nobn():
    return builders.TimeMajor(builders.spiking_resnet18_nobn(), 2), {}


def spikformer():
    return builders.MeanOverT(builders.spikformer()), {}


def csnn():
    from spikingjelly_fmnist_csnn import init_defaults

    return builders.csnn(T=4, channels=16), init_defaults(4)


MODELS = {"sew_resnet18": sew_resnet18, "spiking_resnet18_nobn": spiking_resnet18_nobn, "spikformer": spikformer,
          "csnn": csnn}


def reset(model):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


def init_rates(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rates = [layer.rate for layer in sip.diagnose(model, x).layers]
    reset(model)
    return {"min": min(rates), "median": statistics.median(rates), "max": max(rates),
            "silent": sum(r < 1e-3 for r in rates), "layers": len(rates)}


def accuracy(model, x, y, batch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
            reset(model)
    model.train()
    return correct / len(x)


def run(name, method, seed, data, args):
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model, defaults = MODELS[name]()
    probe = x_tr[:args.batch]
    start = time.perf_counter()
    if method != "default":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method, probe, generator=torch.Generator().manual_seed(seed),
                           **defaults.get(method, {}))
    init_seconds = time.perf_counter() - start
    rates = init_rates(model, probe)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        perm = torch.randperm(len(x_tr), generator=order)
        for i in range(0, len(x_tr) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reset(model)
    return {"model": name, "method": method, "seed": seed, "accuracy": accuracy(model, x_te, y_te, args.batch),
            "init_seconds": init_seconds, "init_rates": rates}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=10000, help="training images (a fixed subset)")
    parser.add_argument("--test", type=int, default=2000, help="test images (a fixed subset)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="real_models.json")
    args = parser.parse_args(argv)
    from data import load

    x_tr, y_tr, x_te, y_te = load("fashion_mnist", args.data_dir, subset=args.train, seed=42)
    data = (x_tr, y_tr, x_te[:args.test], y_te[:args.test])
    rows = []
    print(f"{'model':<22} {'method':<12} {'accuracy':>8} {'per seed':<22} {'init rates min/median/max':<26} "
          f"{'silent':>6} {'init s':>6}", flush=True)
    for name in args.models:
        for method in args.methods:
            runs = [run(name, method, seed, data, args) for seed in args.seeds]
            rows.extend(runs)
            accs = [r["accuracy"] for r in runs]
            r0 = runs[0]["init_rates"]
            print(f"{name:<22} {method:<12} {statistics.mean(accs):>8.4f} "
                  f"{' '.join(f'{a:.4f}' for a in accs):<22} "
                  f"{r0['min']:.3f}/{r0['median']:.3f}/{r0['max']:.3f}{'':<9} {r0['silent']:>6} "
                  f"{statistics.mean(r['init_seconds'] for r in runs):>6.2f}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "runs": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
