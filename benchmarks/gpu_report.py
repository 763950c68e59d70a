"""The GPU check's reporting: the tolerances, one row per check, the comparisons that turn two runs into a row,
the table, the overall verdict and the JSON file."""
from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))

import cupy_doctor  # noqa: E402  (examples/cupy_doctor.py)


# Tolerances. Kernels: the fused kernels compute the same update as the torch reference, but in another order
# (and 0.0.0.0.14 compiles with -use_fast_math), so a membrane sitting on the threshold may flip a spike; a
# flipped spike changes that neuron's gradient. Training: the flips then make the runs drift apart, so ~250
# steps are compared on per-epoch means, not step by step. diagnose: same weights and input, only float
# rounding differs between CPU and CUDA. calibrate: the search stops anywhere inside the ±5% rate band.
TOLERANCES = {
    "spike_mismatch": 1e-3,  # fraction of spikes that differ, one-step probe
    "grad_rel_l2": 1e-2,  # ||g_fast - g_torch|| / ||g_torch||, one-step probe
    "train_loss_rel": 0.10,  # per-epoch mean training loss, relative
    "acc_abs": 0.03,  # per-epoch train accuracy and test accuracy, absolute
    "diagnose_abs": 2e-3,  # rate, silent/saturated fractions, membrane mean/sd (in θ), surrogate support
    "diagnose_grad_rel": 2e-2,  # gradient norm per layer, relative
    "calibrate_scale_rel": 0.10,  # calibrated scale per layer, relative
    "calibrate_rate_abs": 0.02,  # calibrated rate per layer, absolute
    "calibrated_weight_rel": 0.15,  # initialize(method="calibrated") weights, max |Δw| / max |w|
    "law_std_rel": 1e-4,  # a law's std from input statistics summed in another order on CUDA (last bits only)
}


# Made to fail in part e: a module SpikingJelly 0.0.0.0.14 imports only inside its silent `try` (via neuron_kernel)
SIMULATED_FAILURE = "spikingjelly.activation_based.tensor_cache"
SEED_LABEL = "torch_seed1"  # the torch backend again with seed 1


def row(part: str, check: str, torch_value: str = "", fast_value: str = "", difference: str = "",
        tolerance: str = "", verdict: str = "ok") -> Dict[str, str]:
    return {"part": part, "check": check, "torch": torch_value, "fast": fast_value, "difference": difference,
            "tolerance": tolerance, "verdict": verdict}


def job_rows(part: str, label: str, result: Dict[str, Any]) -> List[Dict[str, str]]:
    """Rows for a job that did not finish: how it ended and the error."""
    job = result.get("_job", {})
    if job.get("status") == "done":
        return []
    error = result.get("error", {}).get("error") if isinstance(result.get("error"), dict) else None
    tail = (job.get("log_tail") or "").strip().splitlines()
    detail = error or (tail[-1] if tail else "")
    verdict = "timeout" if job.get("status") == "timeout" else "error"
    return [row(part, f"{label}: {job.get('status')} after {job.get('seconds')} s", difference=detail[:160],
                verdict=verdict)]


def compare_epochs(reference: List[Dict[str, float]], other: List[Dict[str, float]]) -> Dict[str, float]:
    """Largest per-epoch differences of two runs over the same steps."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"runs of different length: {len(reference)} and {len(other)} epochs")
    return {
        "train_loss_rel": max(abs(o["train_loss"] - r["train_loss"]) / max(abs(r["train_loss"]), 1e-12)
                              for r, o in zip(reference, other)),
        "train_acc_abs": max(abs(o["train_acc"] - r["train_acc"]) for r, o in zip(reference, other)),
        "test_acc_abs": max(abs(o["test_acc"] - r["test_acc"]) for r, o in zip(reference, other)),
        "final_test_acc": (reference[-1]["test_acc"], other[-1]["test_acc"]),
    }


def example_rows(part: str, result: Dict[str, Any], fast_label: str, torch_label: str = "torch",
                 stand_in: bool = False) -> List[Dict[str, str]]:
    rows = []
    suffix = " (dry run: torch stands in)" if stand_in else ""
    runs = result.get("runs", {})
    for example in ("spikingjelly_mnist", "spikingjelly_fmnist_csnn"):
        ref, other = runs.get(f"{example}/{torch_label}"), runs.get(f"{example}/{fast_label}")
        check = f"{example} {len(ref['epochs']) if ref and 'epochs' in ref else '?'} epochs{suffix}"
        if ref is None or other is None:
            rows.append(row(part, check, verdict="error", difference="run missing (part ended early)"))
            continue
        if "epochs" not in ref or "epochs" not in other:
            rows.append(row(part, check, torch_value=ref.get("error", "ran")[:80] if "epochs" not in ref else "ran",
                            fast_value=other.get("error", "ran")[:200] if "epochs" not in other else "ran",
                            verdict="skipped" if "out of time" in str(other.get("error", "")) + str(ref.get("error", ""))
                            else "error"))
            continue
        d = compare_epochs(ref["epochs"], other["epochs"])
        ok = (d["train_loss_rel"] <= TOLERANCES["train_loss_rel"] and d["train_acc_abs"] <= TOLERANCES["acc_abs"]
              and d["test_acc_abs"] <= TOLERANCES["acc_abs"])
        steps_time = (sum(e["epoch_train_time"] for e in ref["epochs"]), sum(e["epoch_train_time"] for e in other["epochs"]))
        rows.append(row(part, check,
                        torch_value=f"test acc {d['final_test_acc'][0]:.3f}, {steps_time[0]:.1f} s train",
                        fast_value=f"test acc {d['final_test_acc'][1]:.3f}, {steps_time[1]:.1f} s train",
                        difference=f"loss {d['train_loss_rel']:.2%}, train acc {d['train_acc_abs']:.3f}, "
                                   f"test acc {d['test_acc_abs']:.3f}",
                        tolerance=f"loss {TOLERANCES['train_loss_rel']:.0%}, acc {TOLERANCES['acc_abs']}",
                        verdict="ok" if ok else "FAIL"))
        seeded = runs.get(f"{example}/{SEED_LABEL}")
        if seeded and "epochs" in seeded:
            s = compare_epochs(ref["epochs"], seeded["epochs"])
            rows.append(row(part, f"{example}: torch, seed 0 vs seed 1 (the spread of two seeds)",
                            torch_value=f"test acc {s['final_test_acc'][0]:.3f}",
                            fast_value=f"seed 1: test acc {s['final_test_acc'][1]:.3f}",
                            difference=f"loss {s['train_loss_rel']:.2%}, train acc {s['train_acc_abs']:.3f}, "
                                       f"test acc {s['test_acc_abs']:.3f}", verdict="measured"))
    return rows


def compare_probes(reference: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, float]:
    import torch

    a, b = reference["spikes"], other["spikes"]
    out = {"rate": float(a.mean()), "spike_mismatch": float((a != b).float().mean())}
    for key in ("grad_x", "grad_w"):
        norm = float(torch.linalg.vector_norm(reference[key]))
        out[f"{key}_rel_l2"] = float(torch.linalg.vector_norm(reference[key] - other[key])) / max(norm, 1e-30)
    return out


def probe_rows(part: str, reference: Dict[str, Any], other: Dict[str, Any], labels: Tuple[str, str],
               stand_in: bool) -> List[Dict[str, str]]:
    rows = []
    for name in ("IFNode", "LIFNode"):
        a, b = reference.get(f"{labels[0]}/{name}"), other.get(f"{labels[1]}/{name}")
        check = f"kernel probe {name}: one forward+backward" + (" (dry run)" if stand_in else "")
        if a is None or b is None:
            rows.append(row(part, check, verdict="error", difference="probe missing (see the part's log)"))
            continue
        d = compare_probes(a, b)
        ok = (d["spike_mismatch"] <= TOLERANCES["spike_mismatch"] and d["grad_x_rel_l2"] <= TOLERANCES["grad_rel_l2"]
              and d["grad_w_rel_l2"] <= TOLERANCES["grad_rel_l2"])
        rows.append(row(part, check, torch_value=f"rate {d['rate']:.3f}",
                        difference=f"spikes {d['spike_mismatch']:.1e}, grad x {d['grad_x_rel_l2']:.1e}, "
                                   f"grad W {d['grad_w_rel_l2']:.1e}",
                        tolerance=f"{TOLERANCES['spike_mismatch']:.0e} / {TOLERANCES['grad_rel_l2']:.0e}",
                        verdict="ok" if ok else "FAIL"))
    return rows


def format_table(rows: List[Dict[str, str]]) -> str:
    header = {"part": "part", "check": "check", "torch": "torch", "fast": "CuPy / Triton", "difference": "difference",
              "tolerance": "tolerance", "verdict": "verdict"}
    keys = list(header)
    table = [header] + rows
    widths = {k: min(60, max(len(str(r.get(k, ""))) for r in table)) for k in keys}

    def line(r):
        return " | ".join(str(r.get(k, ""))[:widths[k]].ljust(widths[k]) for k in keys).rstrip()

    return "\n".join([line(header), "-+-".join("-" * widths[k] for k in keys)] + [line(r) for r in rows])


def overall(rows: List[Dict[str, str]]) -> str:
    verdicts = {r["verdict"] for r in rows}
    if verdicts <= {"pending"}:
        return "pending"
    if verdicts & {"FAIL", "error", "timeout"}:
        return "FAIL"
    return "ok"


def write_json(path: Path, record: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


def torch_build() -> Dict[str, Optional[str]]:
    """torch's version and CUDA version as its ``torch/version.py`` states them, read without importing torch."""
    spec = importlib.util.find_spec("torch")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    text = (folder / "version.py").read_text() if folder and (folder / "version.py").is_file() else ""
    found = {key: re.search(rf"^{key}(?::[^=]*)? = '([^']*)'", text, re.M) for key in ("__version__", "cuda")}
    return {"torch": found["__version__"] and found["__version__"].group(1),
            "torch_cuda": found["cuda"] and found["cuda"].group(1)}


def machine_info(device: str) -> Dict[str, Any]:
    """Python, torch (and the GPU when ``device`` is cuda), CuPy and Triton; torch is imported only for the GPU."""
    info: Dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, **torch_build(),
                            "platform": platform.platform()}
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("cupy", "triton"):
        spec = importlib.util.find_spec(name)
        info[name] = "installed" if spec else "not installed"
    info["cupy_distributions"] = cupy_doctor.cupy_distributions()
    return info


def spikeinit_rows(result: Dict[str, Any], device: str) -> List[Dict[str, str]]:
    """Part f: the implementation the neurons ran on, then per method the rates at init and the test accuracy
    after each epoch (every method trains the same epochs, round by round, so a cut run still compares)."""
    if "methods" not in result:
        return []
    implementation = str(result.get("implementation", "?"))
    fused = any(name in implementation for name in ("triton", "cupy", "cuda"))
    rows = [row("f", f"neurons on {device}: {implementation}", fast_value=str(result.get("spikingjelly", {})
                                                                              .get("version", ""))[:60],
                verdict="ok" if fused or device == "cpu" else "FAIL")]
    for method, record in result["methods"].items():
        check = f"VGG-11 no norm, Fashion-MNIST {result.get('train_images')}/{result.get('test_images')}: {method}"
        if "error" in record:
            rows.append(row("f", check, difference=str(record["error"])[:200], verdict="error"))
            continue
        rates = record.get("rates_at_init", {})
        accuracies = [e["test_acc"] for e in record.get("epochs", [])]
        rows.append(row("f", check,
                        torch_value=(f"rates at init {rates['min']:.3f}-{rates['max']:.3f}" if rates else ""),
                        fast_value="test acc by epoch " + " ".join(f"{a:.4f}" for a in accuracies),
                        difference=f"{sum(e['seconds'] for e in record.get('epochs', [])):.0f} s training",
                        verdict="measured" if accuracies else "error"))
    return rows
