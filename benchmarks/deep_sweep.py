"""Deep plain SNNs: accuracy against depth, per init method (no normalization, no skip connections).

    python benchmarks/deep_sweep.py                                      # the whole sweep (hours on a CPU)
    python benchmarks/deep_sweep.py --depths 2 20 --seeds 0 --epochs 1 --train 1000    # a small run
    python benchmarks/deep_sweep.py --dataset fashion_mnist --train 20000 --depths 2 50 100
    python benchmarks/deep_sweep.py --arch conv --depths 2 20 --dataset fashion_mnist
    python benchmarks/deep_sweep.py --val 1000 --lr 3e-4 1e-3 3e-3 --depths 20 --seeds 0   # choose lr
    python benchmarks/deep_sweep.py --epochs 0 --depths 100 1000 --seeds 0     # measurements at init only
    python benchmarks/deep_sweep.py --depths 2 10 20 --methods calibrated:relay --lr 3e-4 --scale-membrane 0.5
                                                  # docs/depth.md's setting: the membrane scaled after the init
    python benchmarks/deep_sweep.py --dataset fashion_mnist --train 20000 --epochs 3 --depths 2 50 100 \
        --methods calibrated:relay --relay 1 --lr 3e-4    # the copy relay: 50 and 100 layers (docs/depth.md)
    python benchmarks/deep_sweep.py --dataset fashion_mnist --train 20000 --epochs 0 --depths 100 --seeds 0 \
        --methods calibrated:relay --relay 1 --scale-membrane per-layer   # gradient flow: a membrane scale per layer
    python benchmarks/deep_sweep.py --arch conv --channels 8 --dataset fashion_mnist --train 20000 --epochs 3 \
        --depths 20 50 --seeds 0 --methods calibrated:relay --relay 1 --lr 1e-3   # the copy relay in conv stacks
    python benchmarks/deep_sweep.py --depths 20 --seeds 0 --alpha 1 --lr 3e-4 --threads 1 \
        --methods calibrated:relay spike_aware:relay calibrated spike_aware kaiming_normal default
                                                  # trainability of 20 layers (docs/initializers.md, setting A)
    python benchmarks/deep_sweep.py --probe-depths 1 5 10 20 --seeds 0 --alpha 1 \
        --methods calibrated calibrated:relay spike_aware spike_aware:relay   # ridge readout at init, no training

Networks (snnTorch ``Leaky``, beta 0.9, snnTorch's default surrogate ATan(alpha = 2) or ATan(``--alpha``),
T = ``--steps`` steps of
direct pixel input, a non-spiking linear readout of the last layer's spikes averaged over T):

* ``--arch mlp``: 784 -> ``--width`` x depth ``Linear`` -> ``Leaky`` layers;
* ``--arch conv``: depth 3 x 3 ``Conv2d`` -> ``Leaky`` layers of ``--channels`` channels ("same" padding; a 2 x 2
  max-pool after the first and the second layer), then the readout.

For every dataset, depth, method and seed: the seeded network is initialized (``default``: the framework's own
init; ``kaiming_normal``; ``spike_aware``; ``calibrated``; ``:relay`` adds the relay structure), then measured at
init on one training batch: each neuron layer's firing rate, the rates on ``--fresh`` other training images (does
calibration generalize beyond its batch of ``--calib-batch`` images?), and the gradient norm of each layer's weight for the cross-entropy of that batch
(``diagnose``): the ratio of the largest to the smallest over the layers. Then Adam (``--lr``, batch ``--batch``)
for ``--epochs`` over ``--train`` training images, evaluated after each epoch on the test set, or with ``--val N``
on N images carved (stratified) from the training set: that is how the learning rate is chosen, never on the test
set. Several ``--lr`` run as a grid. Writes ``--out``.json, a table, and ``--out``.png (final accuracy against
depth, one curve per method, mean and range over the seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Optional
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import common  # noqa: E402  (examples/common.py)
import snn_initplug as sip  # noqa: E402
from arguments import positive_finite, split_method  # noqa: E402  (examples/arguments.py)
from builders import CentredLinear, PlainSNN  # noqa: E402  (benchmarks/builders.py)
from data import load, validation_split  # noqa: E402  (examples/data.py)
from deep_snntorch_mnist import accuracy  # noqa: E402  (the main job's test accuracy)

METHODS = ["default", "kaiming_normal", "spike_aware:relay", "calibrated:relay"]


def initialized(name: str, depth: int, batch: torch.Tensor, seed: int, args,
                labels: Optional[torch.Tensor] = None) -> tuple[PlainSNN, float]:
    torch.manual_seed(seed)
    model = PlainSNN(args.arch, depth, args.width, args.channels, args.beta, args.steps, args.alpha)
    method, options = split_method(name, args.relay)
    start = time.perf_counter()
    if method != "default":
        if method == "calibrated":
            options["target_rate"] = args.target
        if method == "spike_aware" and args.horizon != "single":  # the dense law and the relay weight over T steps
            options["horizon"] = args.steps if args.horizon == "steps" else args.horizon
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method, batch, generator=torch.Generator().manual_seed(seed), skip="readout",
                           **options)
    if args.scale_membrane == "balanced":  # the factor that flattens the weight-gradient norms over depth
        model.balance = sip.balance_gradients(model, batch, seed=seed)
    elif args.scale_membrane == "per-layer":  # one factor per layer, from the cross-entropy's gradients
        model.per_layer = flatten_gradients(model, batch, labels)
    elif args.scale_membrane != 1.0:  # weights, biases and thresholds times c: the same spikes, a wider surrogate
        sip.scale_membrane(model, args.scale_membrane, batch)
    if args.centred:  # after the init and the scaling: a training-side change of the hidden layers, not an initialization
        for i in range(1, depth):
            model.layers[i] = CentredLinear(model.layers[i], args.target)
    return model, time.perf_counter() - start


def flatten_gradients(model: PlainSNN, batch: torch.Tensor, labels: Optional[torch.Tensor], iterations: int = 12,
                      step: float = 0.5) -> list[float]:
    """``--scale-membrane per-layer``: a membrane scale c_l per layer (layer l's weight, bias and threshold times
    c_l: the same spikes, its surrogate 1/c_l times wider) that flattens the norms g_l of the weight gradients of
    the cross-entropy over the layers 2 to L. The weight of layer l + 1 carries the gradient back to layer l, so
    its log-scale moves against the growth log g_l - log g_(l+1); a fixed-point iteration, one backward pass
    each. The first layer and the second (whose weight carries the first's gradient) stay at 1: the first
    reads pixels, not spikes, a difference that is not depth's (flattening it too, measured, set c = 0.11 and
    0.29 there, and Adam's steps relative to those weights 9 and 3 times larger). Returns the factors, checked
    to leave every rate of the batch as it was."""
    if labels is None:
        raise ValueError("--scale-membrane per-layer needs the batch's labels")
    base = [(layer.weight.detach().clone(), layer.bias.detach().clone(), neuron.threshold.detach().clone())
            for layer, neuron in zip(model.layers, model.neurons)]
    before = [layer.rate for layer in sip.diagnose(model, batch).layers]
    log_c = torch.zeros(len(base))
    for i in range(iterations + 1):
        with torch.no_grad():
            for (weight, bias, threshold), layer, neuron, c in zip(base, model.layers, model.neurons, log_c.exp()):
                layer.weight.copy_(weight * c)
                layer.bias.copy_(bias * c)
                neuron.threshold = threshold * c
        if i == iterations:
            break
        norms = torch.tensor([layer.grad_norm for layer in sip.diagnose(model, batch, labels).layers]).log()
        if not bool(torch.isfinite(norms).all()):
            break  # a zero (or underflowed) norm: nothing to flatten against
        log_c[2:] -= step * (norms[1:-1] - norms[2:])
    after = [layer.rate for layer in sip.diagnose(model, batch).layers]
    assert max(abs(a - b) for a, b in zip(before, after)) < 1e-3, "a per-layer scale changed the spikes"
    return [float(c) for c in log_c.exp()]


def horizon(text: str):
    """``--horizon``: single, steps, stationary or a positive number of steps."""
    if text in ("single", "steps", "stationary"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected single, steps, stationary or a number of steps, got {text!r}")


def readout_probe(name: str, depth: int, seed: int, data, args) -> float:
    """Accuracy of a ridge-regression readout on the untrained network's time-averaged last-layer spikes: how
    much of the input survives ``depth`` layers at init (no training of the hidden layers)."""
    x_tr, y_tr, x_ev, y_ev = data
    calib = args.calib_batch or args.batch
    model, _ = initialized(name, depth, x_tr[:calib], seed, args, y_tr[:calib])

    def features(x):
        with torch.no_grad():
            total = sum(model.last_layer_spikes(x))
        return torch.cat([total / model.steps, torch.ones(len(x), 1)], 1)

    a = features(x_tr)
    weights = torch.linalg.solve(a.T @ a + 0.1 * torch.eye(a.shape[1]), a.T @ F.one_hot(y_tr, 10).float())
    return (features(x_ev).matmul(weights).argmax(1) == y_ev).float().mean().item()


def membrane_factor(text: str):
    """``--scale-membrane``: a positive finite number (the main job's ``-membrane`` parser), ``balanced`` or
    ``per-layer``."""
    return text if text in ("balanced", "per-layer") else positive_finite(text)


def at_init(model: PlainSNN, batch, labels, fresh, fresh_labels, target: float) -> dict:
    """Rates on the batch and on a fresh batch, and the spread of the weight gradients of the cross-entropy
    (through the readout) over the layers, on both: the largest norm over the smallest."""
    diagnosis, fresh_diagnosis = sip.diagnose(model, batch, labels), sip.diagnose(model, fresh, fresh_labels)
    rates = [layer.rate for layer in diagnosis.layers]
    fresh_rates = [layer.rate for layer in fresh_diagnosis.layers]
    grads = [layer.grad_norm for layer in diagnosis.layers if layer.grad_norm is not None]
    return {"rates": rates, "fresh_rates": fresh_rates, "grad_norms": grads,
            "silent_layers": sum(r < 1e-3 for r in rates),
            "fresh_worst": max((abs(r / target - 1) for r in fresh_rates), default=None),
            "grad_ratio": spread(grads), "fresh_grad_ratio": spread([layer.grad_norm for layer in fresh_diagnosis.layers
                                                                     if layer.grad_norm is not None])}


def spread(norms: list[float]) -> float:
    """Largest over smallest norm (infinite when one is 0: a layer that does not learn)."""
    positive = [g for g in norms if g > 0]
    return max(positive) / min(positive) if norms and len(positive) == len(norms) else math.inf


def traced(model: PlainSNN, step: int, losses: list[float], x_ev, y_ev, fresh: int) -> dict:
    """``--trace``: the training loss since the last trace, the evaluation accuracy, every layer's rate on
    ``fresh`` evaluation images, and per hidden weight its mean and sd off the relay pattern (what drifts)."""
    off_relay = []
    for layer in model.layers[1:]:
        w = layer.weight.detach()
        keep = sip.relay_pattern(w.shape) == 0
        off_relay.append((float(w[keep].mean()), float(w[keep].std())))
    return {"step": step, "loss": statistics.fmean(losses), "accuracy": accuracy(model, x_ev, y_ev),
            "rates": [layer.rate for layer in sip.diagnose(model, x_ev[:fresh]).layers], "off_relay": off_relay}


def epoch_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int,
                order: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch of cross-entropy steps over batches in the order of a permutation drawn from ``order`` (a full
    last batch only); yields each step's loss after the step."""
    perm = torch.randperm(len(x), generator=order)
    for i in range(0, len(x) - batch + 1, batch):
        idx = perm[i:i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield loss


def run(name: str, depth: int, seed: int, lr: float, data, args) -> dict:
    x_tr, y_tr, x_ev, y_ev = data
    calib = args.calib_batch or args.batch
    model, init_s = initialized(name, depth, x_tr[:calib], seed, args, y_tr[:calib])
    factor = model.balance.factor if hasattr(model, "balance") else getattr(model, "per_layer", args.scale_membrane)
    record = {"method": name, "depth": depth, "seed": seed, "lr": lr, "init_s": init_s, "membrane_factor": factor,
              **at_init(model, x_tr[: args.batch], y_tr[: args.batch], x_tr[calib: calib + args.fresh],
                         y_tr[calib: calib + args.fresh], args.target)}
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr) if args.optimizer == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    order = torch.Generator().manual_seed(seed)
    record["accuracy"], record["trace"], start, step, losses = [], [], time.perf_counter(), 0, []
    for _ in range(args.epochs):
        for loss in epoch_steps(model, optimizer, x_tr, y_tr, args.batch, order):
            step += 1
            losses.append(float(loss.detach()))
            if args.trace and step % args.trace == 0:
                record["trace"].append(traced(model, step, losses, x_ev, y_ev, args.fresh))
                losses = []
        record["accuracy"].append(accuracy(model, x_ev, y_ev))
    record["train_s"] = time.perf_counter() - start
    # did the activity survive training? (a deep stack can train into silence or saturation)
    record["rates_after"] = [layer.rate for layer in sip.diagnose(model, x_ev[: args.fresh]).layers]
    return record


def rates_l1_l10_last(record: dict) -> str:
    """The rates at init of the first, the tenth (or last) and the last neuron layer."""
    rates = record["rates"]
    return "/".join(f"{rates[i]:.3f}" for i in (0, min(9, len(rates) - 1), -1))


def summary(records: list[dict]) -> list[dict]:
    """Per (method, depth, lr): the final accuracy over the seeds, and the init measurements of seed 0."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["depth"], r["lr"]), []).append(r)
    rows = []
    for (method, depth, lr), rs in groups.items():
        final = [r["accuracy"][-1] if r["accuracy"] else math.nan for r in rs]  # --epochs 0: init only
        first = rs[0]
        rows.append({"method": method, "depth": depth, "lr": lr, "final": final,
                     "mean": statistics.fmean(final), "rates": (min(first["rates"]), max(first["rates"])),
                     "silent": first["silent_layers"], "fresh_worst": first["fresh_worst"],
                     "grad_ratio": first["grad_ratio"], "fresh_grad_ratio": first["fresh_grad_ratio"]})
    return rows


def table(rows: list[dict], evaluated_on: str) -> str:
    lines = [f"{'method':<20} {'depth':>5} {'lr':>7}  {evaluated_on + ' accuracy (seeds)':<34} {'rates at init':<13} "
             f"{'silent':>6} {'fresh batch':>11} {'grad max/min':>12} {'(fresh)':>9}"]
    for r in sorted(rows, key=lambda r: (r["method"], r["depth"], r["lr"])):
        fresh = "n/a" if r["fresh_worst"] is None else f"±{r['fresh_worst']:.0%}"
        accs = f"{r['mean']:.3f} ({' '.join(f'{a:.3f}' for a in r['final'])})"
        lines.append(f"{r['method']:<20} {r['depth']:>5} {r['lr']:>7.0e}  {accs:<34} "
                     f"{r['rates'][0]:.3f}-{r['rates'][1]:.3f}  {r['silent']:>6} {fresh:>11} {r['grad_ratio']:>12.3g} "
                     f"{r['fresh_grad_ratio']:>9.3g}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    rows = [r for r in rows if not math.isnan(r["mean"])]
    if not rows:
        print("no training (--epochs 0): no accuracy plot")
        return
    plt = common.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["depth"])
        depths = [r["depth"] for r in mine]
        ax.plot(depths, [r["mean"] for r in mine], marker="o", label=method)
        ax.fill_between(depths, [min(r["final"]) for r in mine], [max(r["final"]) for r in mine], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("depth (weight layers)")
    ax.set_ylabel("accuracy after the last epoch")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--depths", type=int, nargs="+", default=[2, 10, 20, 50, 100])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, nargs="+", default=[1e-3], help="one rate for every depth (a grid if several)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--trace", type=int, default=0, metavar="N",
                   help="every N training steps record the loss, the accuracy, each layer's rate and the drift of "
                        "the hidden weights off the relay pattern (in the JSON's records)")
    p.add_argument("--centred", action="store_true",
                   help="after init, the hidden Linear layers see their spike input minus the target rate (the "
                        "same function at init, bias adjusted; MLP only): an experiment on training, not an init")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                   help="Adam, or SGD with momentum 0.9 (whose steps follow the gradient's size layer by layer)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train", type=int, default=None, help="training images (default: all there are)")
    p.add_argument("--test", type=int, default=None, help="test images (default: the whole test set)")
    p.add_argument("--val", type=int, default=0, help="carve this many (stratified) from the training images and "
                                                      "evaluate on them instead of the test set")
    p.add_argument("--calib-batch", type=int, default=None,
                   help="images the init sees (default: --batch): a rate follows its batch's input intensity, so a "
                        "larger batch generalizes better")
    p.add_argument("--fresh", type=int, default=64,
                   help="images after the calibration batch on which the rates at init are measured again (and "
                        "test images for the rates after training)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--target", type=float, default=0.1587, help="calibrated's target rate")
    p.add_argument("--relay", type=float, default=0.9,
                   help="the relay share of the :relay methods; 1: the copy relay (no dense part: every hidden layer's "
                        "spikes a copy of the first's at init)")
    p.add_argument("--horizon", default="single", type=horizon,
                   help="spike_aware's horizon: single (one step); steps (the T steps) or a number of steps simulated "
                        "(its relay weight then holds the rate over them of the neuron's dynamics); or stationary "
                        "(the stationary sums)")
    p.add_argument("--scale-membrane", type=membrane_factor, default=1.0,
                   help="after init, sip.scale_membrane(model, C): every hidden layer's weight and bias and every "
                        "threshold times C (the same spikes; the surrogate 1/C times wider relative to θ); "
                        "'balanced': the C of sip.balance_gradients (flat weight-gradient norms over depth); "
                        "'per-layer': one C per layer flattening the cross-entropy's weight-gradient norms")
    p.add_argument("--alpha", type=positive_finite, default=None,
                   help="an ATan surrogate of this alpha (default: snnTorch's own, ATan alpha 2; 1 is twice as wide)")
    p.add_argument("--probe-depths", type=int, nargs="+", default=None,
                   help="instead of training: the test accuracy of a ridge readout on the untrained network's "
                        "time-averaged last-layer spikes at these depths, for each of --methods (seed: the first "
                        "of --seeds)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/deep_sweep")
    args = p.parse_args(argv)
    if args.centred and args.arch != "mlp":
        p.error("--centred is for --arch mlp")
    if args.threads:
        torch.set_num_threads(args.threads)
    x_tr, y_tr, x_te, y_te = load(args.dataset, args.data_dir, subset=args.train, test_subset=args.test)
    if args.val:
        train_idx, val_idx = validation_split(y_tr, args.val)
        data, evaluated_on = (x_tr[train_idx], y_tr[train_idx], x_tr[val_idx], y_tr[val_idx]), "validation"
    else:
        data, evaluated_on = (x_tr, y_tr, x_te, y_te), "test"
    if args.probe_depths:
        for name in args.methods:
            for depth in args.probe_depths:
                print(f"{name:<20} depth {depth:3d}: readout-only {evaluated_on} accuracy at init "
                      f"{readout_probe(name, depth, args.seeds[0], data, args):.3f}", flush=True)
        return []
    records = []
    for depth in args.depths:
        for name in args.methods:
            for lr in args.lr:
                for seed in args.seeds:
                    r = run(name, depth, seed, lr, data, args)
                    records.append(r)
                    print(f"{name:<20} depth {depth:>4} lr {lr:.0e} seed {seed}: {evaluated_on} accuracy "
                          f"{' '.join(f'{a:.3f}' for a in r['accuracy'])}; rates L1/L10/last {rates_l1_l10_last(r)}, "
                          f"{min(r['rates']):.3f}-"
                          f"{max(r['rates']):.3f} (after training {min(r['rates_after']):.3f}-{max(r['rates_after']):.3f}), "
                          f"grad max/min {r['grad_ratio']:.3g} (fresh batch {r['fresh_grad_ratio']:.3g}) "
                          f"({r['train_s']:.0f} s)",
                          flush=True)
    rows = summary(records)
    print(table(rows, evaluated_on))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "evaluated_on": evaluated_on,
                                                    "records": records}, indent=1, default=str))
    plot(rows, out.with_suffix(".png"), f"{args.arch}, {args.dataset}, T = {args.steps}, {args.epochs} epochs")
    return rows


if __name__ == "__main__":
    main()
