"""Do calibrated rates hold on a fresh batch? Per layer: the rate on the calibration batch and on fresh batches.

    python benchmarks/fresh_rates.py                                   # MNIST, 50 x 512, T = 1, 64 images
    python benchmarks/fresh_rates.py --dataset fashion_mnist --calib 64 256 512
    python benchmarks/fresh_rates.py --depth 20 --width 128

A plain stack (``builders.PlainSNN``: ``Linear`` -> ``snn.Leaky`` in a custom time loop, no normalization, no skip
connection) is initialized with ``initialize(model, "calibrated", images[:calib], target_rate=...)``, then every
neuron layer's rate is measured by ``sip.diagnose`` on the calibration images and on ``--windows`` disjoint
windows of ``--fresh`` other training images. Besides the deviations from the target, the script prints the
floor any estimate from ``calib`` images has: a layer's rate varies from image to image (its standard deviation
over the fresh images, ``sd``), so the mean over ``calib`` images misses the mean over all images by about
``sd / sqrt(calib)`` (one standard error, printed relative to the target, the largest over the layers).
"""
import argparse
import os
import sys
import warnings

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "examples"))

from builders import PlainSNN  # noqa: E402  (benchmarks/builders.py)
from data import load  # noqa: E402  (examples/data.py)
import snn_initplug as sip  # noqa: E402


def per_image_rates(model: PlainSNN, images: torch.Tensor) -> torch.Tensor:
    """[layers, images]: each neuron layer's rate on each image (over neurons and steps), counted here."""
    rates = []
    with torch.no_grad():
        x = images.flatten(1)
        mems = [neuron.reset_mem() for neuron in model.neurons]
        per_step = []
        for _ in range(model.steps):
            h, layer_rates = x, []
            for i, (layer, neuron) in enumerate(zip(model.layers, model.neurons)):
                h, mems[i] = neuron(layer(h), mems[i])
                layer_rates.append((h != 0).float().mean(1))
            per_step.append(torch.stack(layer_rates))
        rates = torch.stack(per_step).mean(0)
    return rates


def run(args, calib: int) -> dict:
    images = load(args.dataset, verbose=False, download=False)[0]
    torch.manual_seed(args.seed)
    model = PlainSNN("mlp", args.depth, args.width, 16, args.beta, args.steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sip.initialize(model, "calibrated", images[:calib], target_rate=args.target, skip="readout",
                       generator=torch.Generator().manual_seed(args.seed))
    on_batch = per_image_rates(model, images[:calib]).mean(1)
    windows = [images[calib + w * args.fresh: calib + (w + 1) * args.fresh] for w in range(args.windows)]
    fresh = [per_image_rates(model, window) for window in windows]
    sd = torch.cat(fresh, 1).std(1)
    return {"calib": calib, "batch": on_batch, "fresh": [f.mean(1) for f in fresh],
            "floor": float((sd / calib ** 0.5).max()) / args.target}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--beta", type=float, default=0.9)
    parser.add_argument("--target", type=float, default=0.1587)
    parser.add_argument("--calib", type=int, nargs="+", default=[64], help="calibration images (several: a run each)")
    parser.add_argument("--fresh", type=int, default=512, help="images per fresh window")
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=5, help="print every n-th layer (and the last)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for calib in args.calib:
        row = run(args, calib)
        rows.append(row)
        print(f"\n{args.dataset}, {args.depth} x {args.width}, T = {args.steps}, target {args.target}, calibrated on "
              f"{calib} images; fresh windows of {args.fresh} images")
        print(f"{'layer':>5} {'batch':>7} " + " ".join(f"{'fresh ' + str(w + 1):>8}" for w in range(args.windows)))
        layers = sorted(set(range(0, args.depth, args.every)) | {args.depth - 1})
        for k in layers:
            print(f"{k + 1:>5} {row['batch'][k]:>7.4f} " + " ".join(
                f"{float(f[k]) / args.target - 1:>+8.1%}" for f in row["fresh"]))
        worst = [(float((f / args.target - 1).min()), float((f / args.target - 1).max())) for f in row["fresh"]]
        print("worst over the layers: " + "; ".join(f"window {w + 1} {lo:+.1%} / {hi:+.1%}"
                                                    for w, (lo, hi) in enumerate(worst))
              + f"; one standard error of a {calib}-image mean (largest layer): ±{row['floor']:.1%}")
    return rows


if __name__ == "__main__":
    main()
