"""Cost of `initialize` against re-running the framework's default init, measured in one run.

    python benchmarks/init_overhead.py [--repeats 5]

Models: SpikingJelly's sew_resnet18 (multi-step, T=4, batch 1, 3x32x32; planned with an example input, which
its custom forward needs) and a 50-layer, width-512 snnTorch Leaky MLP (planned from module order and with an
example input). The baseline re-runs each weight layer's `reset_parameters()` (PyTorch's default, which both
frameworks' layers use). Prints the median time of each and the ratio; target <= 2x.
"""
import argparse
import statistics
import time
import warnings

import torch
import torch.nn as nn

import builders  # benchmarks/builders.py
import snn_initplug as sip


def default_init(model):
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            module.reset_parameters()


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.simplefilter("ignore")
    cases = []
    try:
        from spikingjelly.activation_based import surrogate

        net = builders.sew_resnet18(surrogate_function=surrogate.ATan(), detach_reset=True)
        x = torch.rand(4, 1, 3, 32, 32)
        cases.append(("sew_resnet18 (SpikingJelly), ikun, example input", net, "ikun", x))
        cases.append(("sew_resnet18 (SpikingJelly), spike_aware, example input", net, "spike_aware", x))
    except ImportError as exc:
        print(f"skipping sew_resnet18: {exc}")
    try:
        import snntorch as snn

        mlp = nn.Sequential(*[m for _ in range(50) for m in (nn.Linear(512, 512), snn.Leaky(beta=0.5, init_hidden=True))])
        cases.append(("50-layer MLP (snnTorch), ikun, module order", mlp, "ikun", None))
        cases.append(("50-layer MLP (snnTorch), spike_aware, example input", mlp, "spike_aware", (torch.rand(64, 512) < 0.16).float()))
    except ImportError as exc:
        print(f"skipping the snnTorch MLP: {exc}")
    print(f"{'model / method':<58}{'initialize':>12}{'default':>12}{'ratio':>8}")
    for name, model, method, example in cases:
        ours = median_time(lambda: sip.initialize(model, method, example), args.repeats)
        base = median_time(lambda: default_init(model), args.repeats)
        print(f"{name:<58}{ours * 1e3:10.1f}ms{base * 1e3:10.1f}ms{ours / base:7.2f}x")


if __name__ == "__main__":
    main()
