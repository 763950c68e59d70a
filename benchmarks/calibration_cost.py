"""What ``calibrated`` costs on the models people train today, in forward passes of the whole model.

    python benchmarks/calibration_cost.py              # every model whose framework is installed
    python benchmarks/calibration_cost.py --models sew_resnet18 tutorial5 --batch 16
    python benchmarks/calibration_cost.py --models spikformer --weightless threshold   # attention LIFs too

Columns: ``ratio`` = calibrated / forward, the median over the repeats of each run's ratio to a forward pass timed
just before it (a shared CPU's load changes by the minute); ``search`` = (calibrated − start) / forward, the part the search adds
to the analytic start (``start s``: ``initialize`` with the start method alone); ``default s``: the framework's
own init (every ``reset_parameters``), for what merely sampling the weights costs.

For each model: the seconds of one forward pass (fastest of 5 after a warm-up call, no gradient), the seconds of
``initialize(model, "calibrated", x)`` (the analytic start, the plan and the search; fastest of 3 runs on fresh
copies, after a warm-up run that pays for the one-time imports and surrogate tables), their ratio, how many calls
of the whole model the calibration made (counted by a hook on the model; a pass stopped early counts as one), the calibration mode, and the lowest /
highest rate after calibration over the calibrated layers with the layers not within ±10% of the target named.
Small inputs so that one run takes a few minutes on a 2-core CPU:

* ``sew_resnet18``: SpikingJelly's zoo SEW ResNet-18 (``LIFNode``, ADD, multi-step, T = 2, 32 x 32 x 3);
* ``spiking_vgg11_bn``: the zoo's Spiking VGG-11 with BatchNorm (``LIFNode``, multi-step, T = 2, 32 x 32 x 3);
* ``spikformer``: SpikingJelly 2.x's shipped Spikformer scaled down (T = 2, 28 x 28, patch 4, 64 dims, 2 blocks);
* ``csnn``: the IKUN CSNN example (``examples/spikingjelly_fmnist_csnn.py``, 16 channels, T = 4);
* ``tutorial5``: the snnTorch tutorial-5 network 784-1000-10 (``snn.Leaky``, one call per step, T = 25);
* ``spiking_resnet34``: the zoo's Spiking ResNet-34 with BatchNorm (``LIFNode``, multi-step, T = 2, 32 x 32 x 3);
* ``plif``: a PLIF conv net (``ParametricLIFNode``, Conv-BN-PLIF-pool x 2, FC-PLIF x 2, T = 4, 28 x 28);
* ``spike_driven``: a Spike-driven-Transformer-like net (T = 2, 32 x 32 x 3, 4 x 4 patches of 64 dims, 2 blocks:
  membrane shortcuts, spike-driven self-attention Q * LIF(sum over tokens of K * V), MLP);
* ``loop10``, ``loop100``, ``loop1000``: a plain snnTorch stack of that many ``Linear(128, 128)`` -> ``snn.Leaky``
  layers in a custom time loop (``benchmarks/builders.py``'s ``PlainSNN``, T = 4, 784 inputs, one neuron call per
  step): the cost against depth. ``loop1000`` is not in the default list (minutes); give ``--models loop1000
  --repeats 1``.
"""
import argparse
import copy
import statistics
import importlib.util
import os
import sys
import time
import warnings

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "examples"))

import builders  # noqa: E402  (benchmarks/builders.py)
import snn_initplug as sip  # noqa: E402

HAS = {name: importlib.util.find_spec(name) is not None for name in ("snntorch", "spikingjelly")}


def sew_resnet18(batch):
    return builders.sew_resnet18(), torch.rand(2, batch, 3, 32, 32)


def spiking_vgg11_bn(batch):
    return builders.spiking_vgg11_bn(), torch.rand(2, batch, 3, 32, 32)


def spikformer(batch):
    return builders.spikformer(), torch.rand(batch, 1, 28, 28)


def csnn(batch):
    return builders.csnn(T=4, channels=16), torch.rand(batch, 1, 28, 28)


def tutorial5(batch):
    from snntorch_mnist import Net, encode

    return Net(), encode(torch.rand(batch, 1, 28, 28), 25)


def spiking_resnet34(batch):
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_resnet

    model = spiking_resnet.spiking_resnet34(spiking_neuron=neuron.LIFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    return model, torch.rand(2, batch, 3, 32, 32)


def plif(batch):
    from spikingjelly.activation_based import functional, layer, neuron

    model = torch.nn.Sequential(
        layer.Conv2d(1, 32, 3, padding=1, bias=False), layer.BatchNorm2d(32), neuron.ParametricLIFNode(),
        layer.MaxPool2d(2),
        layer.Conv2d(32, 32, 3, padding=1, bias=False), layer.BatchNorm2d(32), neuron.ParametricLIFNode(),
        layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(32 * 7 * 7, 128), neuron.ParametricLIFNode(),
        layer.Linear(128, 10), neuron.ParametricLIFNode())
    functional.set_step_mode(model, "m")
    return model, torch.rand(4, batch, 1, 28, 28)


def spike_driven(batch):
    return SpikeDriven(), torch.rand(2, batch, 3, 32, 32)


class _TokenNorm(torch.nn.Module):
    """A Linear then BatchNorm over the channels of [T, B, N, C] tokens."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear, self.norm = torch.nn.Linear(dim_in, dim_out), torch.nn.BatchNorm1d(dim_out)

    def forward(self, x):
        y = self.linear(x)
        return self.norm(y.flatten(0, 2)).reshape(y.shape)


class _SpikeDrivenBlock(torch.nn.Module):
    """Membrane shortcuts around spike-driven self-attention (Q * LIF(sum over tokens of K * V), no softmax,
    no scaling) and an MLP, as in Yao et al. 2023's Spike-driven Transformer."""

    def __init__(self, dim):
        super().__init__()
        from spikingjelly.activation_based import neuron

        def lif(**options):
            return neuron.LIFNode(step_mode="m", **options)

        self.attn_lif, self.q, self.k, self.v = lif(), _TokenNorm(dim, dim), _TokenNorm(dim, dim), _TokenNorm(dim, dim)
        self.q_lif, self.k_lif, self.v_lif, self.kv_lif = lif(), lif(), lif(), lif(v_threshold=0.5)
        self.proj, self.mlp_lif, self.fc1, self.fc1_lif = (_TokenNorm(dim, dim), lif(), _TokenNorm(dim, 4 * dim),
                                                           lif())
        self.fc2 = _TokenNorm(4 * dim, dim)

    def forward(self, x):
        s = self.attn_lif(x)
        q, k, v = self.q_lif(self.q(s)), self.k_lif(self.k(s)), self.v_lif(self.v(s))
        x = x + self.proj(q * self.kv_lif((k * v).sum(dim=2, keepdim=True)))
        return x + self.fc2(self.fc1_lif(self.fc1(self.mlp_lif(x))))


class SpikeDriven(torch.nn.Module):
    def __init__(self, dim=64, blocks=2):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron

        self.embed = layer.SeqToANNContainer(torch.nn.Conv2d(3, dim, 4, stride=4), torch.nn.BatchNorm2d(dim))
        self.blocks = torch.nn.ModuleList(_SpikeDrivenBlock(dim) for _ in range(blocks))
        self.head_lif, self.head = neuron.LIFNode(step_mode="m"), torch.nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).flatten(3).transpose(2, 3)  # [T, B, N, C] tokens, membrane level
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_lif(x).mean(dim=2)).mean(0)


def loop(depth):
    def build(batch):
        return builders.PlainSNN("mlp", depth, 128, 16, 0.9, 4), torch.rand(batch, 784)
    return build


MODELS = {"sew_resnet18": ("spikingjelly", sew_resnet18), "spiking_vgg11_bn": ("spikingjelly", spiking_vgg11_bn),
          "spikformer": ("spikingjelly", spikformer), "csnn": ("spikingjelly", csnn),
          "tutorial5": ("snntorch", tutorial5), "spiking_resnet34": ("spikingjelly", spiking_resnet34),
          "plif": ("spikingjelly", plif), "spike_driven": ("spikingjelly", spike_driven),
          "loop10": ("snntorch", loop(10)), "loop100": ("snntorch", loop(100)), "loop1000": ("snntorch", loop(1000))}
SLOW = {"loop1000"}


def reset(model):
    for module in model.modules():
        if hasattr(module, "reset") and callable(module.reset) and module is not model and "spikingjelly" in type(module).__module__:
            module.reset()


def forward_seconds(model, x, repeats=5):
    times = []
    with torch.no_grad():
        reset(model)
        model(x)  # warm-up: the first call pays for allocation and lazy initialization
        for _ in range(repeats):
            reset(model)
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    reset(model)
    return min(times)


def default_seconds(model):
    """Seconds of the framework's own init (every module's ``reset_parameters``): what sampling the weights costs."""
    start = time.perf_counter()
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return time.perf_counter() - start


def calibrated_seconds(model, x, method="calibrated", **options):
    """Seconds of ``initialize(model, method, x, **options)`` and its report; the count of whole-model calls."""
    passes = [0]
    handle = model.register_forward_pre_hook(lambda m, a: passes.__setitem__(0, passes[0] + 1))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = sip.initialize(model, method, x, generator=torch.Generator().manual_seed(0), **options)
    seconds = time.perf_counter() - start
    handle.remove()
    return seconds, report, passes[0]


def measure(name, batch, repeats=3, tolerance=0.10, weightless="report"):
    """The fastest of ``repeats`` runs, each on a fresh copy of the model (the CPU may be shared: the minimum
    is the least disturbed); the first run also pays for the imports and surrogate tables and is not counted."""
    torch.manual_seed(0)
    model, x = MODELS[name][1](batch)
    options = {"weightless": weightless}
    calibrated_seconds(copy.deepcopy(model), x, **options)
    # each timed run right after its own forward timing, so that both see the same load; the median ratio
    forwards, runs = [], []
    for _ in range(repeats):
        forwards.append(forward_seconds(model, x))
        runs.append(calibrated_seconds(copy.deepcopy(model), x, **options))
    ratios = sorted(r[0] / f for r, f in zip(runs, forwards))
    one, seconds = min(forwards), min(r[0] for r in runs)
    _, report, passes = runs[-1]
    start_method = report.method.split("start ")[-1].rstrip(")")  # "calibrated (start spike_aware)"
    starts = [calibrated_seconds(copy.deepcopy(model), x, start_method)[0] / forward_seconds(model, x)
              for _ in range(repeats)]
    default = min(default_seconds(copy.deepcopy(model)) for _ in range(repeats))
    calibration = report.calibration
    scaled = [row for row in calibration.layers if row.parameters and not row.parameters[0].endswith(".threshold")]
    off = [f"{row.neuron} ({row.rate:.3f}: {row.status.split(':')[0]})" for row in calibration.layers
           if abs(row.rate / row.target - 1) > tolerance]
    thresholds = [f"{row.neuron} {row.rate:.3f}" for row in calibration.layers
                  if row.parameters and row.parameters[0].endswith(".threshold")]
    return {"model": name, "thresholds": thresholds, "forward_s": one, "calibrated_s": seconds, "ratio": statistics.median(ratios),
            "start_s": statistics.median(starts) * one, "search_ratio": statistics.median(ratios) - statistics.median(starts),
            "default_s": default,
            "forward_passes": passes, "mode": calibration.mode, "layers": len(scaled),
            "min": min(r.rate for r in scaled), "max": max(r.rate for r in scaled), "off": off}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=[m for m, (fw, _) in MODELS.items() if HAS[fw] and m not in SLOW],
                        choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (the fastest is kept)")
    parser.add_argument("--weightless", choices=["report", "threshold"], default="report",
                        help="calibrate's option for neurons no weight feeds (threshold: bring them to the target)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"{'model':<18} {'forward s':>9} {'default s':>9} {'start s':>7} {'calibrated s':>12} {'ratio':>6} "
          f"{'search':>6} {'passes':>6} {'layers':>6} {'rates':<13} not within ±10% of the target")
    rows = []
    for name in args.models:
        row = measure(name, args.batch, args.repeats, weightless=args.weightless)
        rows.append(row)
        print(f"{name:<18} {row['forward_s']:>9.3f} {row['default_s']:>9.3f} {row['start_s']:>7.2f} "
              f"{row['calibrated_s']:>12.2f} {row['ratio']:>6.1f} {row['search_ratio']:>6.1f} "
              f"{row['forward_passes']:>6} {row['layers']:>6} "
              f"{row['min']:.3f}-{row['max']:.3f}   {'; '.join(row['off']) or 'none'}"
              + (f"   thresholds: {', '.join(row['thresholds'])}" if row["thresholds"] else ""), flush=True)
    return rows


if __name__ == "__main__":
    main()
