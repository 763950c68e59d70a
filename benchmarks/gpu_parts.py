"""The GPU check's parts, parent side: each part runs its jobs in subprocesses (``gpu_workers.py``) within its
share of the time budget and turns what they recorded into rows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))

from gpu_prepare import worker_environment  # noqa: E402
from gpu_report import (SEED_LABEL, SIMULATED_FAILURE, TOLERANCES, example_rows, job_rows, probe_rows,  # noqa: E402
                        row, spikeinit_rows)

WORKER = HERE / "gpu_workers.py"

class Budget:
    """The time left, handed to the parts in proportion to their shares; what a part leaves goes to the next."""

    def __init__(self, total: float):
        self.total = total
        self.start = time.monotonic()

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)

    def allot(self, share: float, shares_left: float) -> float:
        return max(0.0, self.left() - 5.0) * share / max(shares_left, 1e-9)  # 5 s kept for the table and JSON


def run_job(ctx: Dict[str, Any], name: str, job: str, settings: Dict[str, Any], paths: Sequence[str],
            timeout: float, extra_env: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, Any]:
    """One worker subprocess (``gpu_workers.py JOB_FILE``); its recorded result plus how it ended."""
    work, log_dir = Path(ctx["work"]), Path(ctx["log_dir"])
    result_file, job_file, log_file = work / f"{name}.result.json", work / f"{name}.job.json", log_dir / f"{name}.log"
    settings = {**settings, "work": str(work), "log": str(log_file), "job": name}
    job_file.write_text(json.dumps({"job": job, "settings": settings, "result": str(result_file)}))
    result_file.unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(log_file, "a") as log:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(job_file)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(ROOT), env=worker_environment(paths, extra_env),
                                start_new_session=True)
        try:
            status = "done" if proc.wait(timeout=max(timeout, 1.0)) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started
            proc.wait()
            status = "timeout"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result["_job"] = {"status": status, "exit": proc.returncode, "seconds": round(time.monotonic() - t0, 1),
                      "timeout_s": round(timeout, 1), "log": str(log_file)}
    if status != "done":
        result["_job"]["log_tail"] = log_file.read_text(errors="replace")[-1500:]
    return result


def load_probes(path: str) -> Dict[str, Any]:
    import torch

    return torch.load(path) if Path(path).exists() else {}


def example_settings(ctx: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    return {**ctx["sizes"]["examples"], "device": ctx["device"], "data_dir": ctx["data"]["folder"],
            "seconds": seconds}


def part_cupy(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj014"]
    if env.get("paths") is None:
        return [row("a", "SpikingJelly 0.0.0.0.14", difference=env.get("missing", ""), verdict="skipped")], {}
    stand_in = ctx["device"] == "cpu"
    settings = {**example_settings(ctx, seconds * 0.8), "expect_legacy": True, "doctor": not stand_in,
                "backends": {"torch": "torch", "cupy": "torch" if stand_in else "cupy"},
                "seed_runs": {SEED_LABEL: 1},
                "probe_file": str(Path(ctx["work"]) / "probe_sj014.pt")}
    result = run_job(ctx, "a_cupy", "examples", settings, env["paths"], seconds)
    rows = job_rows("a", "SpikingJelly 0.0.0.0.14 examples", result)
    if "cupy" in result and not result["cupy"]["usable"]:
        rows.append(row("a", "CuPy", fast_value=result["cupy"]["message"][:200], verdict="FAIL"))
    probes = load_probes(settings["probe_file"])
    rows += probe_rows("a", probes, probes, ("torch", "cupy"), stand_in)
    rows += example_rows("a", result, "cupy", stand_in=stand_in)
    return rows, result


def part_triton(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj2"]
    if env.get("paths") is None:
        return [row("b", "SpikingJelly 2.x", difference=env.get("missing", ""), verdict="skipped")], {}
    stand_in = ctx["device"] == "cpu"
    results, rows = {}, []
    budget = Budget(seconds)
    for label, forced in (("auto", None), ("torch", "torch")):
        # the automatic run compiles the Triton kernels first, so it gets the larger share
        timeout = budget.left() * (0.6 if label == "auto" else 1.0)
        settings = {**example_settings(ctx, timeout * 0.75), "expect_legacy": False,
                    "backends": {label: "auto" if forced is None else "torch"},
                    "seed_runs": {} if forced is None else {SEED_LABEL: 1},
                    "probe_file": str(Path(ctx["work"]) / f"probe_sj2_{label}.pt")}
        extra = {name: forced for name in ("SJ_IF_CUDA_IMPLEMENTATION", "SJ_LIF_CUDA_IMPLEMENTATION")}
        results[label] = run_job(ctx, f"b_triton_{label}", "examples", settings, env["paths"], timeout, extra)
        rows += job_rows("b", f"SpikingJelly 2.x, implementation {label}", results[label])
    impl = results["auto"].get("implementations", {})
    chosen = {k: v.get("implementation") for k, v in impl.items()}
    forced = {k: v.get("implementation") for k, v in results["torch"].get("implementations", {}).items()}
    fused = all(v in ("triton", "cuda") for v in chosen.values()) and bool(chosen)
    rows.append(row("b", "implementation chosen on " + ctx["device"], torch_value=str(forced), fast_value=str(chosen),
                    difference="" if fused else f"unavailable: {impl.get('if', {}).get('unavailable', '')}"[:160],
                    verdict="ok" if fused or stand_in else "FAIL"))
    rows += probe_rows("b", load_probes(str(Path(ctx["work"]) / "probe_sj2_torch.pt")),
                       load_probes(str(Path(ctx["work"]) / "probe_sj2_auto.pt")), ("torch", "auto"), stand_in)
    merged = {"runs": {**results["torch"].get("runs", {}), **results["auto"].get("runs", {})}}
    rows += example_rows("b", merged, "auto", stand_in=stand_in)
    return rows, results


def part_speed(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    import backend_speed

    sizes = ctx["sizes"]["speed"]
    out, rows = {}, []
    versions = [(key, label) for key, label in (("sj014", "0.0.0.0.14 torch vs CuPy"), ("sj2", "2.x torch vs Triton"))
                if ctx["envs"][key].get("paths") is not None]
    for key, label in (("sj014", "0.0.0.0.14"), ("sj2", "2.x")):
        if ctx["envs"][key].get("paths") is None:
            rows.append(row("c", f"SpikingJelly {label}", difference=ctx["envs"][key].get("missing", ""),
                            verdict="skipped"))
    budget = Budget(seconds)
    for i, (key, label) in enumerate(versions):
        share = budget.left() / (len(versions) - i)
        # per backend and T: about a quarter of the share measured, the rest for start-up and kernel compilation
        per = max(sizes["min_seconds"], min(sizes["max_seconds"], share / (2 * len(sizes["T"])) * 0.35))
        m = backend_speed.measure(channels=sizes["channels"], Ts=sizes["T"], batch=sizes["batch"], seconds=per,
                                  warmup=sizes["warmup"], device=ctx["device"],
                                  pythonpath=ctx["envs"][key]["paths"], timeout=share)
        out[key] = m
        res = m["results"]
        for which in ("torch", "fast"):
            r = res[which]
            if "error" in r or "skipped" in r:
                rows.append(row("c", f"SpikingJelly {label}: {which}",
                                difference=(r.get("skipped") or r.get("error", ""))[:200],
                                verdict="skipped" if "skipped" in r and ctx["device"] == "cpu" else "error"))
        for T in map(str, sizes["T"]):
            a = res["torch"].get("runs", {}).get(T, {})
            b = res["fast"].get("runs", {}).get(T, {})
            if "examples_per_s" not in a and "examples_per_s" not in b:
                continue
            ratio = m["speedup"].get(T)
            rows.append(row("c", f"SpikingJelly {label}, T={T}",
                            torch_value=f"{a['examples_per_s']:.0f}/s" if "examples_per_s" in a else a.get("error", "-")[:60],
                            fast_value=(f"{b['examples_per_s']:.0f}/s ({res['fast'].get('implementation')})"
                                        if "examples_per_s" in b else b.get("error", "-")[:60]),
                            difference=f"{ratio:.2f}x" if ratio else "",
                            verdict="measured" if ratio else ("skipped" if ctx["device"] == "cpu" else "error")))
    return rows, out


def part_init(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    rows, results = [], {}
    jobs = [(key, label) for key, label in (("sj2", "2.x + snnTorch"), ("sj014", "0.0.0.0.14"))
            if ctx["envs"][key].get("paths") is not None]
    if not jobs:
        return [row("d", "initialize on CUDA", difference="no SpikingJelly found", verdict="skipped")], {}
    budget = Budget(seconds)
    for i, (key, label) in enumerate(jobs):
        share = budget.left() / (len(jobs) - i)
        settings = {"device": ctx["device"], "methods": ctx["methods"], "seconds": share * 0.75,
                    "init_channels": ctx["sizes"]["init"]["channels"], "snntorch": key == "sj2"}
        result = run_job(ctx, f"d_init_{key}", "init", settings, ctx["envs"][key]["paths"], share)
        results[key] = result
        rows += job_rows("d", f"init ({label})", result)
        per_model: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {}
        for name, r in result.get("initialize", {}).items():
            model, method = name.split("/")
            per_model.setdefault(model, []).append((method, r))
        for model, items in per_model.items():
            bitwise = [m for m, r in items if r.get("bitwise")]
            close = [m for m, r in items if not r.get("bitwise") and str(r.get("verdict", "")).startswith("ok")]
            bad = [m for m, r in items if r.get("verdict") == "FAIL"]
            failed = [m for m, r in items if r.get("verdict") == "FAIL" and ("cuda_error" in r or "cpu_error" in r)]
            bad = [m for m in bad if m not in failed]
            errors = sorted({f"{where}: {r[where + '_error']}"[:120] for m, r in items if m in failed
                             for where in ("cuda", "cpu") if where + "_error" in r})
            other = [f"{m}: {r.get('skipped') or r.get('verdict')}" for m, r in items
                     if m not in bitwise + close + bad + failed]
            detail = ", ".join([f"{len(bitwise)}/{len(items)} bitwise"] +
                               ([f"within tolerance: {', '.join(close)}"] if close else []) +
                               ([f"DIFFER: {', '.join(bad)}"] if bad else []) +
                               ([f"raised ({', '.join(failed)}): {'; '.join(errors)}"] if failed else []) + other)
            rows.append(row("d", f"initialize {model} ({label}), {len(items)} methods", difference=detail[:200],
                            tolerance="bitwise (calibrated: weights 15%)",
                            verdict="FAIL" if bad else ("error" if failed else "ok")))
        for what in ("diagnose", "calibrate"):
            for name, r in result.items():
                if not name.startswith(what + "/"):
                    continue
                model = name.split("/", 1)[1]
                if "verdict" not in r:
                    rows.append(row("d", f"{what} {model} ({label})",
                                    difference=str(r.get("error") or r.get("skipped"))[:160],
                                    verdict="skipped" if "skipped" in r else "error"))
                elif what == "diagnose":
                    rows.append(row("d", f"diagnose {model} ({label})",
                                    difference=f"max |Δ| {r['max_abs']:.1e}, grad norm {r['grad_rel']:.1e}",
                                    tolerance=f"{TOLERANCES['diagnose_abs']:.0e} / {TOLERANCES['diagnose_grad_rel']:.0e}",
                                    verdict=r["verdict"]))
                else:
                    rows.append(row("d", f"calibrate {model} ({label})",
                                    difference=f"scale {r['scale_rel']:.1e}, rate {r['rate_abs']:.1e}, "
                                               f"{r['layers']} layers" + ("" if r.get("same_layers", True)
                                                                          else " (different layers!)"),
                                    tolerance=f"{TOLERANCES['calibrate_scale_rel']} / {TOLERANCES['calibrate_rate_abs']}",
                                    verdict=r["verdict"]))
    return rows, results


def part_doctor(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    env = ctx["envs"]["sj014"]
    if env.get("paths") is None:
        return [row("e", "CuPy diagnosis", difference=env.get("missing", ""), verdict="skipped")], {}
    result = run_job(ctx, "e_doctor", "doctor", {"seconds": max(10.0, seconds * 0.8), "device": ctx["device"]},
                     env["paths"], seconds)
    rows = job_rows("e", "CuPy diagnosis", result)
    d = result.get("diagnosis")
    if d:
        verdict = "ok" if d["usable"] else ("info" if ctx["device"] == "cpu" else "FAIL")
        rows.append(row("e", f"CuPy here ({', '.join(d.get('distributions') or ['no CuPy package'])})",
                        fast_value=d["message"][:200], verdict=verdict))
    sim = result.get("simulated")
    if sim and "skipped" in sim:
        rows.append(row("e", "simulated #459", difference=sim["skipped"], verdict="skipped"))
    elif sim:
        ok = sim.get("names_the_import") and sim.get("example_names_the_import")
        rows.append(row("e", f"simulated #459: {SIMULATED_FAILURE} fails",
                        fast_value=str(sim.get("message", sim.get("error", "")))[:200],
                        difference="named in diagnosis and example message" if ok else "not named",
                        verdict="ok" if ok else "FAIL"))
    return rows, result


# SpikeInit's protocol gets at most 4 minutes, whatever the budget leaves it
SPIKEINIT_SECONDS = 240.0
def part_spikeinit(ctx: Dict[str, Any], seconds: float) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    """SpikeInit's protocol on the fused kernels: SpikingJelly 2.x (Triton) when present, else 0.0.0.0.14 (CuPy)."""
    key = next((k for k in ("sj2", "sj014") if ctx["envs"][k].get("paths") is not None), None)
    if key is None:
        return [row("f", "SpikeInit's protocol", difference="no SpikingJelly found", verdict="skipped")], {}
    data = ctx["data"].get("fashion_mnist", {})
    stand_in = ctx["device"] == "cpu" and "folder" not in data
    folder = ctx["data"]["folder"] if stand_in else data.get("folder")
    if folder is None:
        return [row("f", "SpikeInit's protocol", difference=data.get("missing", "no Fashion-MNIST"),
                    verdict="error")], {}
    seconds = min(seconds, SPIKEINIT_SECONDS)
    settings = {**ctx["sizes"]["spikeinit"], "device": ctx["device"], "data_dir": folder, "seconds": seconds * 0.85}
    result = run_job(ctx, f"f_spikeinit_{key}", "spikeinit", settings, ctx["envs"][key]["paths"], seconds)
    result["data_source"] = "the example data's stand-in (dry run)" if stand_in else data.get("source")
    return job_rows("f", "SpikeInit's protocol", result) + spikeinit_rows(result, ctx["device"]), result


PART_FUNCTIONS = {"cupy": part_cupy, "triton": part_triton, "speed": part_speed, "init": part_init,
                  "doctor": part_doctor, "spikeinit": part_spikeinit}

def sizes_for(device: str) -> Dict[str, Any]:
    """Work per part: about 250 training steps per example run on a GPU, all of Fashion-MNIST for SpikeInit's
    protocol; tiny on the CPU dry run."""
    if device == "cuda":
        return {"data": {"train": 4000, "test": 1000},
                "examples": {"epochs": 4, "batch": 64, "hidden": 400, "mnist_T": 20, "channels": 128, "csnn_T": 4,
                             "probe_T": 8, "probe_batch": 64},
                "speed": {"channels": 128, "T": [4, 32], "batch": 128, "warmup": 3, "min_seconds": 1.0,
                          "max_seconds": 5.0},
                "init": {"channels": 16},
                "spikeinit": {"epochs": 3, "batch": 128, "lr": 1e-3, "width": 1.0, "train": None, "test": None,
                              "calibration_batch": 256}}
    return {"data": {"train": 192, "test": 64},
            "examples": {"epochs": 1, "batch": 64, "hidden": 16, "mnist_T": 2, "channels": 2, "csnn_T": 2,
                         "probe_T": 2, "probe_batch": 4},
            "speed": {"channels": 2, "T": [2], "batch": 4, "warmup": 1, "min_seconds": 0.05, "max_seconds": 0.1},
            "init": {"channels": 2},
            "spikeinit": {"epochs": 2, "batch": 32, "lr": 1e-3, "width": 1 / 16, "train": 96, "test": 64,
                          "calibration_batch": 32}}
