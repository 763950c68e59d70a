"""Convergence benchmark: epochs (and training time) to a target test accuracy, per initialization method.

Tasks (both scaled down so they run on a CPU):
  csnn      the IKUN paper's CSNN on Fashion-MNIST (examples/spikingjelly_fmnist_csnn.py), few channels, a subset;
  snntorch  the snnTorch tutorial 784-1000-10 Leaky network on MNIST (examples/snntorch_mnist.py).

For every task, method and seed the example's own training loop runs (in this process, one call of its
``main``) until the test accuracy reaches the target or the epoch budget ends. The table gives, per method,
the mean epochs to the target (a run that never gets there counts as budget + 1 and is marked ">"), the mean
training seconds to the target, the best test accuracy, and the ratios of the mean epochs to the framework
default ("default") and to Kaiming ("kaiming_normal"): below 1 means faster than that baseline.

    python benchmarks/convergence.py --quick                  # ~1-2 minutes on 2 CPU cores, a smoke run
    python benchmarks/convergence.py                          # the setting in docs/examples.md (~15 minutes)
    python benchmarks/convergence.py --methods default,ikun --seeds 0 1 2 3 --tasks csnn --csnn-target 0.75

    python benchmarks/convergence.py --render runs/convergence/convergence.json   # print the tables again

Writes <out-dir>/convergence.json, <out-dir>/<task>_test_acc.png and a per-run folder with each run's metrics.json.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

DEFAULT_METHODS = "default,kaiming_normal,ikun,spike_aware,fluctuation"
BASELINES = ("default", "kaiming_normal")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings (1 seed, 2 methods, small models): a smoke run")
    p.add_argument("--tasks", default="csnn,snntorch", help="comma-separated: csnn, snntorch")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated snn_initplug methods (or none)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a small shared CPU; one thread per process avoids stalls)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default="runs/convergence")
    p.add_argument("--full", action="store_true", help="train every run for the whole budget (no early stop)")
    g = p.add_argument_group("csnn (Fashion-MNIST)")
    g.add_argument("--csnn-channels", type=int, default=8)
    g.add_argument("--csnn-subset", type=int, default=5000)
    g.add_argument("--csnn-test-subset", type=int, default=1000)
    g.add_argument("--csnn-epochs", type=int, default=6)
    g.add_argument("--csnn-T", type=int, default=4)
    g.add_argument("--csnn-lr", type=float, default=0.1)
    g.add_argument("--csnn-opt", default="sgd")
    g.add_argument("--csnn-target", type=float, default=0.65)
    g = p.add_argument_group("snntorch (MNIST)")
    g.add_argument("--snntorch-hidden", type=int, default=1000)
    g.add_argument("--snntorch-subset", type=int, default=0, help="0: all (5k images offline)")
    g.add_argument("--snntorch-test-subset", type=int, default=1000)
    g.add_argument("--snntorch-epochs", type=int, default=5)
    g.add_argument("--snntorch-T", type=int, default=10)
    g.add_argument("--snntorch-lr", type=float, default=5e-4)
    g.add_argument("--snntorch-target", type=float, default=0.90)
    args = p.parse_args(argv)
    if args.quick:
        args.methods = "default,ikun" if args.methods == DEFAULT_METHODS else args.methods
        args.seeds = args.seeds if args.seeds != [0, 1, 2] else [0]
        args.csnn_channels, args.csnn_subset, args.csnn_test_subset, args.csnn_epochs = 8, 2048, 512, 3
        args.csnn_target = min(args.csnn_target, 0.5)
        args.snntorch_hidden, args.snntorch_subset, args.snntorch_test_subset = 200, 1024, 512
        args.snntorch_epochs, args.snntorch_T, args.snntorch_target = 2, 5, min(args.snntorch_target, 0.75)
        args.snntorch_lr = 2e-3
    return args


def task_argv(args, task: str, method: str, seed: int, out: Path) -> List[str]:
    common = ["-init", method, "-seed", str(seed), "-threads", str(args.threads), "-quiet", "-no-download",
              "-out-dir", str(out)]
    if args.data_dir:
        common += ["-data-dir", args.data_dir]
    if task == "csnn":
        target, epochs = args.csnn_target, args.csnn_epochs
        argv = ["-channels", str(args.csnn_channels), "-subset", str(args.csnn_subset),
                "-test-subset", str(args.csnn_test_subset), "-epochs", str(epochs), "-T", str(args.csnn_T),
                "-lr", str(args.csnn_lr), "-opt", args.csnn_opt, "-b", "128"]
    else:
        target, epochs = args.snntorch_target, args.snntorch_epochs
        argv = ["-hidden", str(args.snntorch_hidden), "-subset", str(args.snntorch_subset),
                "-test-subset", str(args.snntorch_test_subset), "-epochs", str(epochs), "-T", str(args.snntorch_T),
                "-lr", str(args.snntorch_lr), "-b", "128"]
    if not args.full:
        argv += ["-stop-at", str(target)]
    return argv + common


def run_one(task: str, argv: List[str], log: Path) -> Dict[str, Any]:
    if task == "csnn":
        import spikingjelly_fmnist_csnn as example
    else:
        import snntorch_mnist as example
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        record = example.main(argv)
    log.write_text(buffer.getvalue())
    return record


def cache_datasets() -> None:
    """Load each dataset once per process (the examples call data.load on every run)."""
    import data

    if not hasattr(data.load, "cache_info"):
        data.load = functools.lru_cache(maxsize=8)(data.load)


def summarize(runs: List[Dict[str, Any]], task: str, target: float, budget: int) -> List[Dict[str, Any]]:
    rows = []
    methods = list(dict.fromkeys(r["method"] for r in runs if r["task"] == task))
    for method in methods:
        rs = [r for r in runs if r["task"] == task and r["method"] == method]
        epochs = [r["epochs_to_target"] if r["epochs_to_target"] is not None else budget + 1 for r in rs]
        times = [r["time_to_target"] for r in rs if r["time_to_target"] is not None]
        rows.append({
            "method": method, "seeds": len(rs), "reached": sum(r["epochs_to_target"] is not None for r in rs),
            "epochs_mean": statistics.mean(epochs), "epochs_sd": statistics.stdev(epochs) if len(epochs) > 1 else 0.0,
            "epochs": epochs, "per_seed": [str(r["epochs_to_target"]) if r["epochs_to_target"] is not None
                                           else f">{budget}" for r in rs], "censored": any(r["epochs_to_target"] is None for r in rs),
            "time_to_target_mean": statistics.mean(times) if times else None,
            "epoch_time_mean": statistics.mean(r["epoch_time_mean"] for r in rs),
            "best_acc_mean": statistics.mean(r["best_test_acc"] for r in rs),
            "acc_epoch1_mean": statistics.mean(r["test_acc"][0] for r in rs),
        })
    by = {r["method"]: r for r in rows}
    for r in rows:
        for base in BASELINES:
            b = by.get(base)
            r[f"ratio_{base}"] = r["epochs_mean"] / b["epochs_mean"] if b else None
            r[f"time_ratio_{base}"] = (r["time_to_target_mean"] / b["time_to_target_mean"]
                                       if b and r["time_to_target_mean"] and b["time_to_target_mean"]
                                       and not r["censored"] and not b["censored"] else None)
    return rows


def table(rows: List[Dict[str, Any]], task: str, target: float, budget: int) -> str:
    f = lambda v, p=2: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"### {task}: epochs to test accuracy >= {target:.2f} (budget {budget} epochs; '>' = not reached by some seed)",
             "",
             "| method | reached | epochs to target (mean ± sd) | per seed | train s to target | ratio vs default "
             "| ratio vs kaiming_normal | acc after epoch 1 | best acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = ">" if r["censored"] else ""
        by = {x["method"]: x for x in rows}

        def ratio(base):  # '>' / '<': a lower / upper bound because some run did not reach the target
            v, b = r[f"ratio_{base}"], by.get(base)
            if v is None:
                return "n/a"
            if r["method"] == base:
                return "1.00"
            sign = {(True, False): ">", (False, True): "<", (True, True): "?"}.get((r["censored"], b["censored"]), "")
            return f"{sign}{v:.2f}"
        lines.append(f"| {r['method']} | {r['reached']}/{r['seeds']} | {mark}{r['epochs_mean']:.2f} ± {r['epochs_sd']:.2f} "
                     f"| {', '.join(r['per_seed'])} | {f(r['time_to_target_mean'], 1)} "
                     f"| {ratio('default')} | {ratio('kaiming_normal')} "
                     f"| {r['acc_epoch1_mean']:.3f} | {r['best_acc_mean']:.3f} |")
    return "\n".join(lines)


def plot(runs: List[Dict[str, Any]], task: str, target: float, out_dir: Path) -> Optional[Path]:
    import common  # examples/common.py

    plt = common.pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {}
    for r in (r for r in runs if r["task"] == task):
        c = colors.setdefault(r["method"], f"C{len(colors)}")
        label = r["method"] if r["seed"] == min(x["seed"] for x in runs if x["task"] == task and x["method"] == r["method"]) else None
        ax1.plot(range(1, len(r["test_acc"]) + 1), r["test_acc"], "o-", color=c, alpha=0.7, label=label, ms=3)
        ax2.plot(r["train_time"], r["test_acc"], "o-", color=c, alpha=0.7, label=label, ms=3)
    for ax, xl in ((ax1, "epoch"), (ax2, "training time (s)")):
        ax.axhline(target, color="k", ls="--", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{task}: test accuracy per init method (one line per seed)", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{task}_test_acc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(paths: List[str]) -> str:
    """Tables from one or more saved convergence.json files (``--render a.json b.json``)."""
    out = []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        s = saved["settings"]
        for task in dict.fromkeys(r["task"] for r in saved["runs"]):
            target, budget = (s["csnn_target"], s["csnn_epochs"]) if task == "csnn" else \
                (s["snntorch_target"], s["snntorch_epochs"])
            out.append(table(summarize(saved["runs"], task, target, budget), task, target, budget))
    return "\n\n".join(out)


def main(argv=None) -> Dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--render"]:
        print(render(argv[1:]))
        return {}
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for t in tasks:
        if t not in ("csnn", "snntorch"):
            raise SystemExit(f"unknown task {t!r} (csnn, snntorch)")
    cache_datasets()
    print(f"convergence benchmark: tasks {tasks}, methods {methods}, seeds {args.seeds}, threads {args.threads}")
    t_start = time.perf_counter()
    runs: List[Dict[str, Any]] = []
    for task in tasks:
        target = args.csnn_target if task == "csnn" else args.snntorch_target
        budget = args.csnn_epochs if task == "csnn" else args.snntorch_epochs
        for method in methods:
            for seed in args.seeds:
                run_dir = out_dir / "runs" / f"{task}-{method}-seed{seed}"
                argv_run = task_argv(args, task, method, seed, run_dir)
                t0 = time.perf_counter()
                try:
                    record = run_one(task, argv_run, run_dir.with_suffix(".log"))
                except SystemExit as exc:
                    print(f"{task} {method} seed {seed}: skipped ({exc})")
                    continue
                rows = record["epochs"]
                hit = next((r for r in rows if r["test_acc"] >= target), None)
                run = {
                    "task": task, "method": method, "seed": seed, "argv": argv_run,
                    "epochs_to_target": hit["epoch"] if hit else None,
                    "time_to_target": hit["train_time"] if hit else None,
                    "wall_to_target": hit["wall_time"] if hit else None,
                    "test_acc": [r["test_acc"] for r in rows], "train_acc": [r["train_acc"] for r in rows],
                    "test_loss": [r["test_loss"] for r in rows], "train_time": [r["train_time"] for r in rows],
                    "epoch_time_mean": statistics.mean(r["epoch_train_time"] for r in rows),
                    "best_test_acc": max(r["test_acc"] for r in rows), "run_seconds": time.perf_counter() - t0,
                }
                runs.append(run)
                print(f"{task:8s} {method:15s} seed {seed}: epochs to {target:.2f}: "
                      f"{run['epochs_to_target'] or '>' + str(budget)}  acc {', '.join(f'{a:.3f}' for a in run['test_acc'])}"
                      f"  ({run['run_seconds']:.0f} s)", flush=True)
    summary, text = {}, []
    for task in tasks:
        target = args.csnn_target if task == "csnn" else args.snntorch_target
        budget = args.csnn_epochs if task == "csnn" else args.snntorch_epochs
        summary[task] = summarize(runs, task, target, budget)
        if summary[task]:
            text.append(table(summary[task], task, target, budget))
            plot(runs, task, target, out_dir)
    total = time.perf_counter() - t_start
    text.append(f"\ntotal wall time {total:.0f} s ({os.cpu_count()} CPUs, torch threads {args.threads})")
    report = "\n\n".join(text)
    print("\n" + report)
    result = {"argv": argv, "settings": vars(args), "runs": runs,
              "summary": summary, "total_seconds": total,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__}}
    with open(out_dir / "convergence.json", "w") as f:
        json.dump(result, f, indent=2, default=str)
    (out_dir / "convergence.md").write_text(report + "\n")
    print(f"written: {out_dir / 'convergence.json'}, {out_dir / 'convergence.md'}, plots in {out_dir}")
    return result


if __name__ == "__main__":
    main()
