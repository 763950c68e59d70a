"""GPU throughput of SpikingJelly's neuron backends on the IKUN CSNN (forward + backward + SGD step).

Compares examples/second of the torch implementation with the fused one:
  * SpikingJelly 0.0.0.0.14: ``backend='torch'`` vs ``backend='cupy'`` (needs the CuPy wheel matching torch's CUDA:
    ``pip install cupy-cuda12x`` for a CUDA 12 torch, ``cupy-cuda13x`` for CUDA 13);
  * SpikingJelly 2.x: ``SJ_IF_CUDA_IMPLEMENTATION=torch`` vs the automatic choice (Triton in the pip wheel).
Each backend runs in its own subprocess (2.x reads its implementation choice at import), on the same random
Fashion-MNIST-shaped batch, after warm-up (which also compiles the CuPy / Triton kernels), with CUDA
synchronisation around the timed loop. Every T of ``-T`` is measured in the same subprocess.

    python benchmarks/backend_speed.py                          # C = 128, T = 4 and 32, batch 128
    python benchmarks/backend_speed.py --sj-path .sj014         # SpikingJelly 0.0.0.0.14 overlay: torch vs CuPy
    python benchmarks/backend_speed.py -T 4 --seconds 5 --out speed.json

On a machine without CUDA it prints that the figure is pending and exits 0. ``benchmarks/gpu_check.py`` runs
this measurement for both SpikingJelly versions as its part (c).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))

import builders  # noqa: E402  (benchmarks/builders.py)
import common  # noqa: E402  (examples/common.py)
import cupy_doctor  # noqa: E402  (examples/cupy_doctor.py)
from arguments import positive_float, positive_int  # noqa: E402  (examples/arguments.py)

IMPLEMENTATION_VARIABLES = ("SJ_IF_CUDA_IMPLEMENTATION", "SJ_LIF_CUDA_IMPLEMENTATION")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=positive_int, default=128, help="conv channels C of the CSNN")
    p.add_argument("-T", type=positive_int, nargs="+", default=[4, 32], help="time steps (one or more)")
    p.add_argument("-b", "--batch", type=positive_int, default=128)
    p.add_argument("--seconds", type=positive_float, default=3.0, help="timed seconds per backend and T")
    p.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first (kernel compilation)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--sj-path", default=None,
                   help="folder put first on the workers' PYTHONPATH (e.g. a SpikingJelly 0.0.0.0.14 overlay)")
    p.add_argument("--timeout", type=positive_float, default=300.0, help="seconds per worker subprocess")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--worker", choices=["torch", "fast"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------
# worker: one backend, every T, in this process
# ----------------------------------------------------------------------------------------------------------
def _synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, seconds: float, warmup: int, sync) -> Dict[str, float]:
    """Run ``step`` ``warmup`` times untimed, then time enough steps to fill about ``seconds``."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    iters = max(3, int(seconds / max(first, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return {"iters": iters, "seconds": time.perf_counter() - t0}


def training_step(net, opt, x, y):
    """One forward + backward + SGD step of the CSNN, as the example trains it (MSE on rates, reset after)."""
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    def step():
        loss = F.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(net)

    return step


def print_result(result: Dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def worker(which: str, channels: int, Ts: Sequence[int], batch: int, seconds: float, warmup: int,
           device_name: str, report=print_result) -> Dict[str, Any]:
    """Time one backend ("torch" or "fast") of the SpikingJelly in this process's path, for every T; ``report``
    gets the result so far after each T (a parent that must kill the worker keeps the finished T)."""
    common.sj_prepare_env("torch" if which == "torch" else "auto")  # 2.x: force the torch reference
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional, neuron

    device = torch.device(device_name)
    legacy = cupy_doctor.legacy_api(neuron.IFNode)
    out: Dict[str, Any] = {"worker": which, "legacy_api": legacy, "spikingjelly": common.sj_version(),
                           "spikingjelly_file": str(Path(sys.modules["spikingjelly"].__file__).parent),
                           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if legacy:
        backend = "torch" if which == "torch" else "cupy"
        if backend == "cupy":
            if device.type != "cuda":
                return {**out, "skipped": "backend='cupy' needs a CUDA device"}
            diagnosis = cupy_doctor.cupy_diagnosis()
            if not diagnosis["usable"]:
                return {**out, "skipped": diagnosis["message"], "cupy": diagnosis}
        kwargs, out["implementation"] = {"backend": backend}, backend
    else:
        kwargs = {}
        out["implementation"] = (functional.neuron_implementation("if", device)["implementation"]
                                 if hasattr(functional, "neuron_implementation") else "unknown")
    out["runs"] = {}
    for T in Ts:
        torch.manual_seed(0)
        net = builders.csnn(T=T, channels=channels, backend_kwargs=kwargs).to(device)
        x = torch.rand(batch, 1, 28, 28, device=device)
        y = F.one_hot(torch.randint(0, 10, (batch,), device=device), 10).float()
        step = training_step(net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), x, y)
        try:
            timing = time_steps(step, seconds, warmup, lambda: _synchronize(torch, device))
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at large T: record it, go on with the next T
            out["runs"][str(T)] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            report(out)
            continue
        finally:
            del net, step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        out["runs"][str(T)] = {**timing, "examples_per_s": timing["iters"] * batch / timing["seconds"]}
        report(out)
    return out


# ----------------------------------------------------------------------------------------------------------
# parent: one subprocess per backend
# ----------------------------------------------------------------------------------------------------------
def worker_env(which: str, pythonpath: Sequence[str] = ()) -> Dict[str, str]:
    """The subprocess environment: ``pythonpath`` first; the 2.x implementation forced to torch for "torch" and
    left automatic (no inherited override) for "fast"."""
    env = dict(os.environ)
    parts = [str(p) for p in pythonpath] + [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    for name in IMPLEMENTATION_VARIABLES:
        if which == "torch":
            env[name] = "torch"
        else:
            env.pop(name, None)
    return env


def run_worker(which: str, *, channels: int, Ts: Sequence[int], batch: int, seconds: float, warmup: int,
               device: str, pythonpath: Sequence[str] = (), timeout: float = 300.0) -> Dict[str, Any]:
    """One backend in its own subprocess; a failure or a time-out is returned as ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which, "--channels", str(channels),
           "-T", *map(str, Ts), "--batch", str(batch), "--seconds", str(seconds), "--warmup", str(warmup),
           "--device", device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(which, pythonpath),
                              timeout=timeout, cwd=str(ROOT))
    except subprocess.TimeoutExpired as exc:
        partial = last_result(_tail(exc.stdout, 10**6))
        note = {"error": f"timed out after {timeout:.0f} s", "output_tail": _tail(exc.stderr)}
        return {**partial, **note, "worker": which} if partial else {"worker": which, **note}
    line = last_result(proc.stdout)
    if proc.returncode != 0 or line is None:
        return {"worker": which, "error": f"exit status {proc.returncode}", "output_tail": _tail(proc.stderr or proc.stdout)}
    return line


def last_result(stdout: str) -> Optional[Dict[str, Any]]:
    """The last ``RESULT {json}`` line a worker printed (None if none)."""
    lines = [ln for ln in (stdout or "").splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def _tail(text, limit: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-limit:]


def speedups(results: Dict[str, Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """examples/s of the fast backend over the torch one, per T (None where either is missing)."""
    slow, fast = results.get("torch", {}), results.get("fast", {})
    ratios = {}
    for T, row in slow.get("runs", {}).items():
        other = fast.get("runs", {}).get(T, {})
        ok = "examples_per_s" in row and "examples_per_s" in other and "skipped" not in fast
        ratios[T] = other["examples_per_s"] / row["examples_per_s"] if ok else None
    return ratios


def measure(*, channels: int = 128, Ts: Sequence[int] = (4, 32), batch: int = 128, seconds: float = 3.0,
            warmup: int = 3, device: str = "cuda", pythonpath: Sequence[str] = (),
            timeout: float = 300.0) -> Dict[str, Any]:
    """Both backends of the SpikingJelly found on ``pythonpath`` (then the installed one); ``timeout`` is shared
    between the two subprocesses."""
    deadline = time.monotonic() + timeout
    results = {}
    for which in ("torch", "fast"):
        left = deadline - time.monotonic()
        if left < 5:
            results[which] = {"worker": which, "error": "no time left"}
            continue
        results[which] = run_worker(which, channels=channels, Ts=Ts, batch=batch, seconds=seconds, warmup=warmup,
                                    device=device, pythonpath=pythonpath,
                                    timeout=left if which == "fast" else left / 2)
    return {"settings": {"channels": channels, "T": list(Ts), "batch": batch, "seconds": seconds, "warmup": warmup,
                         "device": device, "pythonpath": [str(p) for p in pythonpath]},
            "results": results, "speedup": speedups(results)}


def format_lines(measurement: Dict[str, Any]) -> List[str]:
    lines = []
    settings = measurement["settings"]
    for r in measurement["results"].values():
        if "error" in r or "skipped" in r:
            lines.append(f"{r['worker']:5s} {'skipped' if 'skipped' in r else 'failed'}: {r.get('skipped') or r['error']}")
            continue
        for T, row in r["runs"].items():
            figure = f"{row['examples_per_s']:10.1f} examples/s" if "examples_per_s" in row else row["error"]
            lines.append(f"{r['worker']:5s} {r['implementation']!r:18s} T={T:>3s} {figure} "
                         f"({r['gpu']}, SpikingJelly {r['spikingjelly']}, torch {r['torch']})")
    for T, ratio in measurement["speedup"].items():
        if ratio is not None:
            lines.append(f"speed-up of {measurement['results']['fast']['implementation']} over torch at T={T}: "
                         f"{ratio:.2f}x (CSNN C={settings['channels']}, batch {settings['batch']}, forward+backward+step)")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print_result(worker(args.worker, args.channels, args.T, args.batch, args.seconds, args.warmup, args.device))
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("backend_speed: no CUDA device: pending. The GPU figure (torch vs CuPy/Triton examples/s for the CSNN "
              "forward+backward) needs a machine with an NVIDIA GPU.")
        return 0
    measurement = measure(channels=args.channels, Ts=args.T, batch=args.batch, seconds=args.seconds,
                          warmup=args.warmup, device=args.device, pythonpath=[args.sj_path] if args.sj_path else [],
                          timeout=args.timeout)
    print("\n".join(format_lines(measurement)))
    if args.out:
        Path(args.out).write_text(json.dumps(measurement, indent=2))
    failed = [r for r in measurement["results"].values() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
