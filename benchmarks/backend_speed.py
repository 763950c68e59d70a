"""GPU throughput of SpikingJelly's neuron backends on the IKUN CSNN (forward + backward + SGD step).

Compares examples/second of the torch implementation with the fused one:
  * SpikingJelly 0.0.0.0.14: ``backend='torch'`` vs ``backend='cupy'`` (needs CuPy, e.g. ``pip install cupy-cuda12x``);
  * SpikingJelly 2.x: ``SJ_IF_CUDA_IMPLEMENTATION=torch`` vs the automatic choice (Triton in the pip wheel).
Each backend runs in its own subprocess (2.x reads its implementation choice at import), on the same random
Fashion-MNIST-shaped batch, after warm-up, with CUDA synchronisation around the timed loop.

    python benchmarks/backend_speed.py                         # C = 128, T = 4, batch 128 (the paper's CSNN)
    PYTHONPATH=.sj014 python benchmarks/backend_speed.py       # SpikingJelly 0.0.0.0.14: torch vs CuPy

On a machine without CUDA it prints that the figure is pending and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("-T", type=int, default=4)
    p.add_argument("-b", "--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--worker", choices=["torch", "fast"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> dict:
    """Time one backend; prints one JSON line."""
    import common

    backend = "torch" if args.worker == "torch" else "auto"
    common.sj_prepare_env(backend)  # 2.x: force the torch reference for the 'torch' worker
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly_fmnist_csnn import CSNN

    device = torch.device(args.device)
    legacy = common.sj_has_backend_arg(neuron.IFNode)
    if legacy:
        kwargs = {"backend": "torch" if args.worker == "torch" else "cupy"}
        if kwargs["backend"] == "cupy":
            try:
                import cupy  # noqa: F401
            except Exception:
                return {"worker": args.worker, "skipped": "CuPy is not installed (pip install cupy-cuda12x)"}
        impl = kwargs["backend"]
    else:
        kwargs = {}
        impl = functional.neuron_implementation("if", device)["implementation"] \
            if hasattr(functional, "neuron_implementation") else "unknown"
    torch.manual_seed(0)
    net = CSNN(T=args.T, channels=args.channels, backend_kwargs=kwargs).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = F.one_hot(torch.randint(0, 10, (args.batch,), device=device), 10).float()

    def step():
        loss = F.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(net)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return {"worker": args.worker, "implementation": impl, "legacy_api": legacy,
            "examples_per_s": args.iters * args.batch / seconds, "seconds": seconds,
            "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "spikingjelly": common.sj_version()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("backend_speed: no CUDA device on this machine; the GPU figure (torch vs CuPy/Triton examples/s for "
              "the CSNN forward+backward) is pending. Run this script on a machine with an NVIDIA GPU.")
        return 0
    results = {}
    for which in ("torch", "fast"):
        cmd = [sys.executable, __file__, "--worker", which, "--channels", str(args.channels), "-T", str(args.T),
               "--batch", str(args.batch), "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{which} worker failed:\n{proc.stdout}\n{proc.stderr}")
            return 1
        results[which] = json.loads(line[len("RESULT "):])
    for r in results.values():
        if "skipped" in r:
            print(f"{r['worker']}: skipped: {r['skipped']}")
        else:
            print(f"{r['worker']:5s} implementation {r['implementation']!r:22s} {r['examples_per_s']:10.1f} examples/s "
                  f"({r['gpu']}, SpikingJelly {r['spikingjelly']}, torch {r['torch']})")
    fast, slow = results["fast"], results["torch"]
    ratio = fast["examples_per_s"] / slow["examples_per_s"] if "skipped" not in fast else None
    if ratio is not None:
        print(f"speed-up of {fast['implementation']} over torch: {ratio:.2f}x "
              f"(CSNN C={args.channels}, T={args.T}, batch {args.batch}, forward+backward+step)")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "results": results, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
