"""The figures behind the README's method guide: firing rate of every neuron layer at init, per model type and method.

    python benchmarks/method_guide.py                       # every model type whose framework is installed
    python benchmarks/method_guide.py --models deep recurrent --methods none calibrated calibrated:relay

Model types (real MNIST images from examples/data.py, batch 32, seed 0):

* ``shallow``: the snnTorch tutorial network 784-1000-10 (``snn.Leaky`` β 0.95, rate-coded input, T = 10);
* ``csnn``: the IKUN paper's CSNN (SpikingJelly Conv-BN-IF x2, Linear-IF x2; 16 channels, T = 4): BatchNorm;
* ``deep``: the main job's plain 20 x 256 ``snn.Leaky`` stack (β 0.9, T = 4), no normalization, no skip;
* ``residual``: SpikingJelly's zoo SEW ResNet-18 (``LIFNode``, multi-step, T = 2, 32 x 32 grey input): BN + skips;
* ``recurrent``: snnTorch ``RLeaky`` (784 -> 256 recurrent -> 10 ``Leaky``, T = 10);
* ``transformer``: SpikingJelly 2.x's Spikformer scaled down (T = 2, 28 x 28, patch 4, 64 dims, 4 heads, 2 blocks).

For each method it prints, over the model's neuron layers: how many there are, the lowest / median / highest rate,
how many are silent (< 0.001) or saturated (> 0.9), and the seconds ``initialize`` took. A method that refuses the
model is listed with its error. Writes ``method_guide.json`` to ``--out``.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "examples"))

import builders  # noqa: E402  (benchmarks/builders.py)
import snn_initplug as sip  # noqa: E402
from arguments import split_method  # noqa: E402  (examples/arguments.py)

HAS = {name: importlib.util.find_spec(name) is not None for name in ("snntorch", "spikingjelly")}
METHODS = ["none", "kaiming_normal", "ikun", "spike_aware", "fluctuation", "calibrated"]


def shallow(images):
    from snntorch_mnist import Net, encode

    torch.manual_seed(0)
    return Net(), encode(images, 10), None, {}


def csnn(images):
    from spikingjelly_fmnist_csnn import init_defaults

    torch.manual_seed(0)
    return builders.csnn(T=4, channels=16), images, None, init_defaults(4)


def deep(images):
    torch.manual_seed(0)
    return builders.deep_mlp(20, 256, 0.9, 4), images, None, {}


def residual(images):
    torch.manual_seed(0)
    model = builders.sew_resnet18()
    return model, builders.to_rgb32(images).unsqueeze(0).repeat(2, 1, 1, 1, 1), None, {}


def recurrent(images):
    from snntorch_mnist import encode

    torch.manual_seed(0)
    return builders.RecurrentNet(), encode(images, 10), None, {}


def transformer(images):
    torch.manual_seed(0)
    return builders.spikformer(), images, None, {}


MODELS = {"shallow": ("snntorch", shallow), "csnn": ("spikingjelly", csnn), "deep": ("snntorch", deep),
          "residual": ("spikingjelly", residual), "recurrent": ("snntorch", recurrent),
          "transformer": ("spikingjelly", transformer)}


def measure(model_name, method_name, images, relay):
    _, build = MODELS[model_name]
    model, x, forward, defaults = build(images)
    method, options = split_method(method_name, relay)
    options = {**defaults.get(method, {}), **options}
    start = time.perf_counter()
    if method != "none":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method, x, forward=forward, generator=torch.Generator().manual_seed(0),
                           skip=["readout", "head*", "fc2"] if model_name in ("deep", "transformer") else None,
                           **options)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rates = [layer.rate for layer in sip.diagnose(model, x, forward=forward).layers]
    return {"layers": len(rates), "min": min(rates), "median": statistics.median(rates), "max": max(rates),
            "silent": sum(r < 1e-3 for r in rates), "saturated": sum(r > 0.9 for r in rates),
            "init_seconds": seconds, "rates": rates}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"default: {' '.join(METHODS)} (plus calibrated:relay for 'deep')")
    parser.add_argument("--relay", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/method_guide")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from data import load

    images = load("mnist", None, download=False, verbose=False)[0][:32]
    results = {}
    print(f"{'model':<12}{'method':<20}{'layers':>7}{'min':>8}{'median':>8}{'max':>8}{'silent':>8}{'sat.':>6}"
          f"{'init s':>8}")
    for model_name in args.models:
        framework = MODELS[model_name][0]
        if not HAS[framework]:
            print(f"{model_name:<12}skipped: {framework} is not installed")
            continue
        methods = args.methods or METHODS + (["calibrated:relay"] if model_name == "deep" else [])
        for method_name in methods:
            try:
                row = measure(model_name, method_name, images, args.relay)
            except Exception as exc:  # noqa: BLE001 - a method that refuses the model is a result too
                row = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:150]}"}
                print(f"{model_name:<12}{method_name:<20}  refused: {row['error']}", flush=True)
            else:
                print(f"{model_name:<12}{method_name:<20}{row['layers']:>7}{row['min']:>8.3f}{row['median']:>8.3f}"
                      f"{row['max']:>8.3f}{row['silent']:>8}{row['saturated']:>6}{row['init_seconds']:>8.2f}",
                      flush=True)
            results.setdefault(model_name, {})[method_name] = row
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "method_guide.json"), "w") as handle:
        json.dump({"args": vars(args), "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
