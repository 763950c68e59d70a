"""Variants of the copy relay (``relay=1``) on a deep plain stack, chosen and compared on a validation split:
what docs/depth.md tried beyond the recipe, so every figure there has a command.

    python benchmarks/copy_variants.py --variants copy pairs hidden-lr=inv hidden-lr=invsqrt --depths 2 50
    python benchmarks/copy_variants.py --method spike_aware:relay --horizon steps --variants margin=0.02 margin=0.1 margin=0.25

The network, data, training and validation split are ``benchmarks/deep_sweep.py``'s (Fashion-MNIST 20k, 2,000
carved for validation, T = 4, Adam, batch 64, 3 epochs by default). Variants, each applied after the init:

* ``copy``: the recipe as it is (every hidden layer W = g P, bias 0, g from ``theory.copy_gain``).
* ``pairs``: the second layer copies half of the first layer's units and the complement of the same units into
  the other half (a neuron driven by b − g s spikes exactly when s does not; b = g found over every input train of
  T steps run through snnTorch's own ``Leaky``); the layers after it copy both halves. Its question: does the copy
  chain lose the gradient of the quiet steps (docs/depth.md)? The complement carries it on its spike steps.
* ``hidden-lr=F``: the hidden layers' learning rate times F (``inv``: 1/(L-1), ``invsqrt``: 1/sqrt(L-1)).
* ``margin=M``: each hidden layer's jump rewritten to ``theory.copy_gain(θ, β, T, margin=M)`` (over the T steps).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import deep_sweep  # noqa: E402  (the init, the training steps and the evaluation of the sweep)
from builders import PlainSNN  # noqa: E402  (benchmarks/builders.py)
import snn_initplug as sip  # noqa: E402
from data import load, validation_split  # noqa: E402
from snn_initplug import theory  # noqa: E402


def complement_drive(beta: float, steps: int, threshold: float = 1.0) -> float:
    """The smallest b (on a 0.001 θ grid from θ) at which snnTorch's ``Leaky`` driven by b − b·s spikes exactly
    when s does not, for every train s of ``steps`` steps."""
    import snntorch as snn

    trains = torch.tensor(list(itertools.product([0.0, 1.0], repeat=steps)))
    for k in range(1, 1000):
        b = threshold * (1 + k / 1000)
        neuron = snn.Leaky(beta=beta, threshold=threshold)
        mem, out = neuron.reset_mem(), []
        with torch.no_grad():
            for t in range(steps):
                spk, mem = neuron(b - b * trains[:, t], mem)
                out.append(spk)
        if torch.equal(torch.stack(out, 1), 1 - trains):
            return b
    raise SystemExit("no complement drive found")


def apply_variant(model: PlainSNN, variant: str, args) -> dict:
    name, _, value = variant.partition("=")
    hidden = model.layers[1:]
    with torch.no_grad():
        if name == "pairs":
            layer, half = hidden[0], hidden[0].out_features // 2
            gain = float(layer.weight[0, 0])
            drive = complement_drive(args.beta, args.steps)
            layer.weight.zero_()
            layer.bias.zero_()
            for i in range(half):
                layer.weight[i, i] = gain
                layer.weight[half + i, i] = -drive
                layer.bias[half + i] = drive
            return {"complement_drive": drive}
        if name == "margin":
            gain = theory.copy_gain(1.0, args.beta, args.steps, margin=float(value))
            for layer in hidden:
                layer.weight.copy_(gain * sip.relay_pattern(layer.weight.shape))
            return {"gain": gain}
    if name in ("copy", "hidden-lr"):
        return {}
    raise SystemExit(f"unknown variant {variant!r}")


def hidden_lr_factor(variant: str, depth: int) -> float:
    name, _, value = variant.partition("=")
    if name != "hidden-lr":
        return 1.0
    return {"inv": 1 / max(depth - 1, 1), "invsqrt": 1 / math.sqrt(max(depth - 1, 1))}.get(value) or float(value)


def train(variant: str, depth: int, seed: int, data, args) -> dict:
    x_tr, y_tr, x_ev, y_ev = data
    model, _ = deep_sweep.initialized(args.method, depth, x_tr[: args.batch], seed, args)
    extra = apply_variant(model, variant, args)
    rates = [layer.rate for layer in sip.diagnose(model, x_tr[: args.batch]).layers]
    hidden = {id(p) for layer in model.layers[1:] for p in layer.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in hidden]},
              {"params": [p for p in model.parameters() if id(p) in hidden],
               "lr": args.lr * hidden_lr_factor(variant, depth)}]
    optimizer = torch.optim.Adam(groups, lr=args.lr)
    order, accuracy = torch.Generator().manual_seed(seed), []
    for _ in range(args.epochs):
        for _ in deep_sweep.epoch_steps(model, optimizer, x_tr, y_tr, args.batch, order):
            pass
        accuracy.append(deep_sweep.accuracy(model, x_ev, y_ev))
    return {"variant": variant, "depth": depth, "seed": seed, "accuracy": accuracy, "rates": rates, **extra}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["copy", "pairs"])
    p.add_argument("--method", default="calibrated:relay", choices=["calibrated:relay", "spike_aware:relay"])
    p.add_argument("--horizon", default="single", choices=["single", "steps"])
    p.add_argument("--depths", type=int, nargs="+", default=[2, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--dataset", default="fashion_mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/copy_variants.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.__dict__.update(arch="mlp", width=256, channels=16, beta=0.9, steps=4, relay=1.0, target=0.1587,
                         scale_membrane=1.0, centred=False, alpha=None)
    x_tr, y_tr, _, _ = load(args.dataset, None, subset=args.train)
    train_idx, val_idx = validation_split(y_tr, args.val)
    data = (x_tr[train_idx], y_tr[train_idx], x_tr[val_idx], y_tr[val_idx])
    records = []
    for depth in args.depths:
        for variant in args.variants:
            for seed in args.seeds:
                r = train(variant, depth, seed, data, args)
                records.append(r)
                print(f"{variant:<18} depth {depth:>4} seed {seed}: validation accuracy "
                      f"{' '.join(f'{a:.3f}' for a in r['accuracy'])}; rates at init "
                      f"{min(r['rates']):.3f}-{max(r['rates']):.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "records": records}, indent=1, default=str))
    return records


if __name__ == "__main__":
    main()
