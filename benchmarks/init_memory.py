"""Memory that ``initialize`` needs beside the model, in copies of the model's parameters, measured in one run.

    python benchmarks/init_memory.py [--width 4096] [--depth 4] [--methods ikun spike_aware auto]

Each method runs in a fresh process: an snnTorch stack of ``depth`` ``Linear(width, width)`` + ``Leaky`` layers
is built and run once on a batch of 8 (so the forward's own buffers are counted before), then initialized; the
process's peak resident memory (``ru_maxrss``) after the call minus before it, over the parameters' bytes, is
the ratio printed. The floor of an all-or-nothing write is 1 (the values to restore) plus what the new values
need while they are drawn; ``torch.nn.init`` itself needs none.
"""
import argparse
import subprocess
import sys

CHILD = """
import resource, sys, warnings
import torch, torch.nn as nn, snntorch as snn, snn_initplug as sip
warnings.simplefilter("ignore")
width, depth, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
net = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), snn.Leaky(beta=0.9, init_hidden=True))])
x = torch.rand(8, width)
net(x)
for m in net:
    if hasattr(m, "reset_mem"):
        m.reset_mem()
size = sum(p.numel() * p.element_size() for p in net.parameters())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sip.initialize(net, x, steps=2) if method == "auto" else sip.initialize(net, x, method)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(size, after - before)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["ikun", "spike_aware", "auto"])
    args = parser.parse_args()
    print(f"{args.depth} x Linear({args.width}, {args.width}) + snn.Leaky")
    print(f"{'method':<12} {'params MB':>10} {'extra peak MB':>14} {'copies':>7}")
    for method in args.methods:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.width), str(args.depth), method],
                             check=True, capture_output=True, text=True).stdout.split()
        size, extra = int(out[0]), int(out[1])
        print(f"{method:<12} {size / 2**20:>10.0f} {extra / 2**20:>14.0f} {extra / size:>7.2f}")


if __name__ == "__main__":
    main()
