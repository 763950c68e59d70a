"""The GPU check's jobs, each run in a subprocess with its part's PYTHONPATH (``python gpu_workers.py JOB_FILE``):
the examples trained with both neuron backends and the kernel probe, ``initialize``/``calibrate``/``diagnose`` on
CUDA against the CPU, the CuPy diagnosis with issue #459 simulated, and SpikeInit's protocol."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))

import cupy_doctor  # noqa: E402  (examples/cupy_doctor.py)
from cupy_doctor import describe_failure  # noqa: E402
from gpu_prepare import importable  # noqa: E402
from gpu_report import SIMULATED_FAILURE, TOLERANCES  # noqa: E402

class Recorder:
    """A dict written to disk after every change, so a part killed at its time limit keeps what it measured."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: Dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def spikingjelly_identity() -> Dict[str, Any]:
    import spikingjelly
    from spikingjelly.activation_based import neuron

    legacy = cupy_doctor.legacy_api(neuron.IFNode)
    return {"path": str(Path(spikingjelly.__file__).parent), "legacy_api": legacy,
            "version": "0.0.0.0.14 API (backend=)" if legacy else "2.x API (no backend=)"}


def implementations(device) -> Dict[str, Any]:
    """SpikingJelly 2.x: what ``functional.neuron_implementation`` reports for IF and LIF on ``device``."""
    from spikingjelly.activation_based import functional

    if not hasattr(functional, "neuron_implementation"):
        return {}
    out = {}
    for kind in ("if", "lif"):
        try:
            out[kind] = functional.neuron_implementation(kind, device)
        except Exception as exc:  # noqa: BLE001
            out[kind] = {"implementation": f"error: {type(exc).__name__}: {exc}"}
    return out


def kernel_probe(neuron_name: str, neuron_kwargs: Dict[str, Any], device, T: int, batch: int) -> Dict[str, Any]:
    """One forward + backward of a Linear -> spiking layer on fixed CPU-drawn input and weights."""
    import torch
    from spikingjelly.activation_based import neuron, surrogate

    g = torch.Generator().manual_seed(1234)
    features, hidden = 128, 256
    x = torch.randn(T, batch, features, generator=g)
    w = torch.randn(hidden, features, generator=g) * (1.5 / features ** 0.5)
    r = torch.randn(T, batch, hidden, generator=g)
    x, w, r = x.to(device).requires_grad_(), w.to(device).requires_grad_(), r.to(device)
    if neuron_kwargs.get("backend") == "cupy":
        cupy_doctor.legacy_cupy_numpy_alias()
    extra = {"tau": 2.0} if neuron_name == "LIFNode" else {}
    cell = getattr(neuron, neuron_name)(surrogate_function=surrogate.ATan(), step_mode="m", **extra, **neuron_kwargs)
    cell = cell.to(device).train()
    spikes = cell(torch.matmul(x, w.t()))
    (spikes * r).sum().backward()
    return {"spikes": spikes.detach().cpu(), "grad_x": x.grad.detach().cpu(), "grad_w": w.grad.detach().cpu()}


def run_example(script: str, argv: List[str], log_path: Path) -> Dict[str, Any]:
    """``examples/<script>.py``'s ``main(argv)`` in this process, its output to ``log_path``; the epochs."""
    module = importlib.import_module(script)
    t0 = time.perf_counter()
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"$ python examples/{script}.py {' '.join(argv)}", flush=True)
        try:
            record = module.main(argv)
        except SystemExit as exc:  # the examples stop with a message (e.g. CuPy missing)
            return {"error": str(exc.code), "seconds": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return {"error": describe_failure(exc)["error"], "seconds": time.perf_counter() - t0}
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_train_time")
    return {"epochs": [{k: row[k] for k in keys} for row in record["epochs"]], "seconds": time.perf_counter() - t0}


def example_argv(example: str, backend: str, s: Dict[str, Any], out_dir: Path, seed: int = 0) -> List[str]:
    argv = ["-device", s["device"], "-backend", backend, "-init", "ikun", "-epochs", str(s["epochs"]),
            "-b", str(s["batch"]), "-seed", str(seed), "-data-dir", s["data_dir"], "-no-download", "-quiet", "-no-plots",
            "-out-dir", str(out_dir)]
    if s["device"] == "cpu":
        argv += ["-threads", "1"]
    if example == "spikingjelly_mnist":
        return argv + ["-layers", "2", "-hidden", str(s["hidden"]), "-T", str(s["mnist_T"])]
    return argv + ["-channels", str(s["channels"]), "-T", str(s["csnn_T"])]


def job_examples(s: Dict[str, Any], rec: Recorder) -> None:
    """Train the two SpikingJelly examples with each backend of ``s["backends"]`` (label -> -backend value) and
    probe the kernels. 0.0.0.0.14 runs both backends here; 2.x one per process (set at import). Labels in
    ``s["seed_runs"]`` (label -> seed) run the torch backend again with another seed: how far two seeds drift
    apart, the spread the backends' difference is read against."""
    import torch

    # the same data, seed and order for both backends; only the neuron kernels may differ
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    device = torch.device(s["device"])
    rec["spikingjelly"] = spikingjelly_identity()
    if rec.data["spikingjelly"]["legacy_api"] != s["expect_legacy"]:
        raise RuntimeError(f"expected the {'0.0.0.0.14' if s['expect_legacy'] else '2.x'} API, found "
                           f"{rec.data['spikingjelly']['version']} at {rec.data['spikingjelly']['path']}")
    if not s["expect_legacy"]:
        rec["implementations"] = implementations(device)
    if s.get("doctor"):
        rec["cupy"] = cupy_doctor.cupy_diagnosis()
    deadline = time.monotonic() + s["seconds"]
    probes, runs = {}, {}
    for label, backend in s["backends"].items():
        kwargs = {"backend": backend} if s["expect_legacy"] else {}
        for name in ("IFNode", "LIFNode"):
            try:
                probes[f"{label}/{name}"] = kernel_probe(name, kwargs, device, s["probe_T"], s["probe_batch"])
            except BaseException as exc:  # noqa: BLE001
                rec[f"probe_error/{label}/{name}"] = describe_failure(exc)
    torch.save(probes, s["probe_file"])
    rec["probes_saved"] = sorted(probes)
    plan = [(label, backend, 0) for label, backend in s["backends"].items()]
    plan += [(label, "torch", seed) for label, seed in s.get("seed_runs", {}).items()]
    for example in ("spikingjelly_mnist", "spikingjelly_fmnist_csnn"):
        for label, backend, seed in plan:
            if time.monotonic() > deadline:
                runs[f"{example}/{label}"] = {"error": "skipped: out of time for this part"}
            else:
                out_dir = Path(s["work"]) / f"{s['job']}-{example}-{label}"
                runs[f"{example}/{label}"] = run_example(example, example_argv(example, backend, s, out_dir, seed),
                                                         Path(s["log"]))
            rec["runs"] = runs


def job_init(s: Dict[str, Any], rec: Recorder) -> None:
    """``initialize`` (every method), ``calibrate`` and ``diagnose`` on the same models on the CPU and on CUDA."""
    import torch
    import torch.nn as nn

    import snn_initplug as sip

    device = torch.device(s["device"])
    rec["spikingjelly"] = spikingjelly_identity()
    legacy = rec.data["spikingjelly"]["legacy_api"]
    deadline = time.monotonic() + s["seconds"]
    g = torch.Generator().manual_seed(7)
    T = 4
    models: Dict[str, Tuple[Callable[[Dict[str, Any]], nn.Module], Any, Dict[str, Any], Any]] = {}
    if s.get("snntorch", True) and importable("snntorch"):
        import snntorch as snn

        def mlp(_backend):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(784, 128), snn.Leaky(beta=0.9, init_hidden=True),
                                 nn.Linear(128, 128), snn.Leaky(beta=0.9, init_hidden=True),
                                 nn.Linear(128, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))

        def steps(model, x):
            return [model(x) for _ in range(T)]

        models["snntorch_mlp"] = (mlp, torch.rand(32, 784, generator=g), {"calibrated": {"steps": T}},
                                  {"forward": steps, "calibrate": {"steps": T}})
    else:
        rec["snntorch"] = "not installed: the snnTorch model is skipped"
    import builders
    from spikingjelly_fmnist_csnn import init_defaults

    def csnn(backend_kwargs):
        torch.manual_seed(0)
        return builders.csnn(T=T, channels=s["init_channels"], backend_kwargs=backend_kwargs)

    models["spikingjelly_csnn"] = (csnn, torch.rand(16, 1, 28, 28, generator=g), init_defaults(T), {})
    fast = {}
    if legacy and device.type == "cuda":
        diagnosis = cupy_doctor.cupy_diagnosis()
        fast = {"backend": "cupy"} if diagnosis["usable"] else {}  # the diagnosis applied the np.int alias
        rec["cuda_backend"] = "cupy" if fast else f"torch (CuPy not usable: {diagnosis['message']})"
    elif not legacy:
        rec["cuda_backend"] = implementations(device)
    methods = s["methods"] or [m for m in sip.apply.METHODS if m != "auto"]
    results: Dict[str, Any] = {}
    for model_name, (build, x, defaults, run) in models.items():
        cpu_kwargs = {"backend": "torch"} if legacy else {}
        for method in methods:
            key = f"{model_name}/{method}"
            if time.monotonic() > deadline:
                results[key] = {"skipped": "out of time for this part"}
                continue
            results[key] = compare_initialize(build, cpu_kwargs, fast if legacy else {}, x, device, method,
                                              defaults.get(method, {}))
            rec["initialize"] = results
        if time.monotonic() > deadline:
            rec[f"calibrate/{model_name}"] = {"skipped": "out of time for this part"}
            continue
        reference = build(cpu_kwargs)
        sip.initialize(reference, "ikun", x, generator=torch.Generator().manual_seed(3), **defaults.get("ikun", {}))
        state = reference.state_dict()
        for what, function in (("diagnose", compare_diagnose), ("calibrate", compare_calibrate)):
            try:
                rec[f"{what}/{model_name}"] = function(build, cpu_kwargs, fast if legacy else {}, state, x, device, run)
            except BaseException as exc:  # noqa: BLE001
                rec[f"{what}/{model_name}"] = {"error": describe_failure(exc)["error"]}


def _parameters(model) -> Dict[str, Any]:
    return {name: p.detach().cpu() for name, p in model.named_parameters()}


def compare_initialize(build, cpu_kwargs, cuda_kwargs, x, device, method, options) -> Dict[str, Any]:
    """Initialize the same model on the CPU and on ``device`` with the same generator seed; compare."""
    import torch

    import snn_initplug as sip

    out: Dict[str, Any] = {}
    reports = {}
    params = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = build(kwargs).to(dev)
        try:
            reports[where] = sip.initialize(model, method, x.to(dev), generator=torch.Generator().manual_seed(11),
                                            **options)
        except Exception as exc:  # noqa: BLE001
            out[f"{where}_error"] = describe_failure(exc)["error"]
            continue
        params[where] = _parameters(model)
    if len(params) < 2:
        out["verdict"] = "n/a" if "cpu_error" in out and out.get("cpu_error") == out.get("cuda_error") else "FAIL"
        return out
    differing = [n for n in params["cpu"] if not torch.equal(params["cpu"][n], params["cuda"][n])]
    out["bitwise"] = not differing
    out["differing"] = differing
    scale = max(float(p.abs().max()) for p in params["cpu"].values())
    out["weight_rel"] = max((float((params["cpu"][n] - params["cuda"][n]).abs().max()) / max(scale, 1e-30)
                             for n in differing), default=0.0)
    names = {where: [layer.layer for layer in report.layers] for where, report in reports.items()}
    out["same_layers"] = names["cpu"] == names["cuda"]
    stds = [(a.std, b.std) for a, b in zip(reports["cpu"].layers, reports["cuda"].layers)]
    out["law_std_rel"] = max((abs(a - b) / max(abs(a), 1e-30) for a, b in stds), default=0.0)
    if not out["same_layers"]:  # different pairings draw in another order: no tolerance explains that
        out["verdict"] = "FAIL"
        out["layers"] = names
    elif out["bitwise"]:
        out["verdict"] = "ok"
    elif method == "calibrated":
        out["verdict"] = "ok" if out["weight_rel"] <= TOLERANCES["calibrated_weight_rel"] else "FAIL"
    elif 0 < out["law_std_rel"] <= TOLERANCES["law_std_rel"] and out["weight_rel"] <= 2 * out["law_std_rel"] + 1e-6:
        out["verdict"] = "ok (same draws; the law's input statistics measured on CUDA differ in the last bits)"
    else:
        out["verdict"] = "FAIL"
    return out


def _load(build, kwargs, state, device):
    model = build(kwargs)
    model.load_state_dict(state)
    return model.to(device)


def compare_diagnose(build, cpu_kwargs, cuda_kwargs, state, x, device, run) -> Dict[str, Any]:
    import torch

    import snn_initplug as sip

    target = torch.arange(len(x)) % 10
    rows = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = _load(build, kwargs, state, dev)
        diagnosis = sip.diagnose(model, x.to(dev), target=target.to(dev), forward=run.get("forward"))
        rows[where] = {r.neuron: r for r in diagnosis.layers}
    worst, worst_grad = 0.0, 0.0
    for name, a in rows["cpu"].items():
        b = rows["cuda"][name]
        for field in ("rate", "silent", "saturated", "membrane_mean", "membrane_std", "in_support"):
            va, vb = getattr(a, field), getattr(b, field)
            if va is not None and vb is not None:
                worst = max(worst, abs(va - vb))
        if a.grad_norm and b.grad_norm is not None:
            worst_grad = max(worst_grad, abs(a.grad_norm - b.grad_norm) / a.grad_norm)
    ok = worst <= TOLERANCES["diagnose_abs"] and worst_grad <= TOLERANCES["diagnose_grad_rel"]
    return {"layers": len(rows["cpu"]), "max_abs": worst, "grad_rel": worst_grad, "verdict": "ok" if ok else "FAIL"}


def compare_calibrate(build, cpu_kwargs, cuda_kwargs, state, x, device, run) -> Dict[str, Any]:
    import torch

    import snn_initplug as sip

    reports = {}
    for where, kwargs, dev in (("cpu", cpu_kwargs, torch.device("cpu")), ("cuda", cuda_kwargs, device)):
        model = _load(build, kwargs, state, dev)
        reports[where] = sip.calibrate(model, x.to(dev), target_rate=0.1, seed=0, **run.get("calibrate", {}))
    scale_rel = rate_abs = 0.0
    statuses = []
    layers = {where: {layer.neuron: layer for layer in report.layers} for where, report in reports.items()}
    for name in layers["cpu"].keys() & layers["cuda"].keys():
        a, b = layers["cpu"][name], layers["cuda"][name]
        scale_rel = max(scale_rel, abs(a.scale - b.scale) / max(abs(a.scale), 1e-30))
        rate_abs = max(rate_abs, abs(a.rate - b.rate))
        statuses.append((a.status, b.status))
    same_layers = list(layers["cpu"]) == list(layers["cuda"])
    ok = (same_layers and scale_rel <= TOLERANCES["calibrate_scale_rel"]
          and rate_abs <= TOLERANCES["calibrate_rate_abs"] and all(x == y for x, y in statuses))
    return {"layers": len(statuses), "same_layers": same_layers, "scale_rel": scale_rel, "rate_abs": rate_abs,
            "status_cpu": [a for a, _ in statuses], "status_cuda": [b for _, b in statuses],
            "per_layer": {where: [[x.neuron, x.initial_rate, x.rate, x.scale, x.evaluations, x.status]
                                  for x in report.layers] for where, report in reports.items()},
            "notes": {where: report.notes for where, report in reports.items()},
            "verdict": "ok" if ok else "FAIL"}




def fake_cupy(folder: Path) -> Path:
    """A stand-in ``cupy`` package that imports (for the CPU dry run of the #459 simulation, where no CuPy is)."""
    (folder / "cupy").mkdir(parents=True, exist_ok=True)
    (folder / "cupy" / "__init__.py").write_text('__version__ = "0.0 (stand-in for the CPU dry run)"\n')
    return folder


def simulate_issue_459(extra_paths: Sequence[str] = (), timeout: float = 60.0) -> Dict[str, Any]:
    """With CuPy importable, make SpikingJelly 0.0.0.0.14's silent CuPy import fail (one of its modules cannot be
    imported) and record what the diagnosis and the examples' ``-backend cupy`` then say."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*extra_paths, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    proc = subprocess.run([sys.executable, str(HERE / "gpu_simulate_459.py"), SIMULATED_FAILURE], capture_output=True,
                          text=True, timeout=timeout, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    result = json.loads(line[len("RESULT "):])
    result.update(blocked=SIMULATED_FAILURE, names_the_import=SIMULATED_FAILURE in result["message"],
                  example_names_the_import=SIMULATED_FAILURE in result["example"])
    return result


def job_doctor(s: Dict[str, Any], rec: Recorder) -> None:
    """The CuPy diagnosis here; then issue #459 simulated (on the CPU dry run with a stand-in CuPy)."""
    rec["diagnosis"] = cupy_doctor.cupy_diagnosis()
    extra = [str(fake_cupy(Path(s["work"]) / "fake_cupy"))] if s["device"] == "cpu" else []
    if not extra and rec.data["diagnosis"]["stage"] in ("not installed", "import cupy"):
        rec["simulated"] = {"skipped": "CuPy does not import here, so the #459 case cannot arise"}
        return
    rec["simulated"] = simulate_issue_459(extra, timeout=s["seconds"])


# what part f compares: the framework's own init ("default": no initialize call), calibrated, and the methods of
# SpikeInit's paper when the package has them (spikeinit; Ding et al. 2025's baseline)
SPIKEINIT_METHODS = ("default", "calibrated", "spikeinit", "ding")
SPIKEINIT_OPTIONS = {"spikeinit": {"target_rate": 0.1}}  # the paper's default target rate p


def spikeinit_methods(available: Sequence[str]) -> List[str]:
    """The methods of part f that the package offers (``default`` always: it leaves the framework's own init)."""
    return [m for m in SPIKEINIT_METHODS if m == "default" or m in available]


def spikeinit_backend(legacy: bool, device) -> Tuple[Dict[str, Any], str]:
    """The neurons' fused kernels: CuPy on 0.0.0.0.14 (when usable), SpikingJelly's own choice on 2.x (Triton)."""
    if legacy:
        usable = device.type == "cuda" and cupy_doctor.cupy_diagnosis()["usable"]  # applies the np.int alias
        return ({"backend": "cupy"}, "cupy") if usable else ({"backend": "torch"}, "torch")
    chosen = implementations(device).get("lif", {})
    return {}, str(chosen.get("implementation", "torch (no neuron_implementation)"))


def fashion_mnist_32(s: Dict[str, Any], device):
    """Fashion-MNIST padded to 32 x 32 (SpikeInit's input), on ``device``: (x_train, y_train, x_test, y_test)."""
    import torch.nn.functional as F

    import data

    x_tr, y_tr, x_te, y_te = data.load("fashion_mnist", s["data_dir"], subset=s["train"], test_subset=s["test"],
                                       download=False, verbose=False)
    return (F.pad(x_tr, (2, 2, 2, 2)).to(device), y_tr.to(device), F.pad(x_te, (2, 2, 2, 2)).to(device),
            y_te.to(device))


def spikeinit_epoch(model, optimizer, x, y, batch: int, order) -> Dict[str, float]:
    """One epoch of cross-entropy steps on the time-averaged readout (a full last batch only)."""
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    model.train()
    perm = torch.randperm(len(x), generator=order).to(x.device)
    total = correct = seen = 0.0
    for i in range(0, len(x) - batch + 1, batch):
        idx = perm[i:i + batch]
        out = model(x[idx])
        loss = F.cross_entropy(out, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        functional.reset_net(model)
        total += float(loss.detach()) * len(idx)
        correct += float((out.argmax(1) == y[idx]).sum())
        seen += len(idx)
    return {"train_loss": total / max(seen, 1), "train_acc": correct / max(seen, 1)}


def evaluate_accuracy(model, x, y, batch: int = 1000) -> float:
    import torch
    from spikingjelly.activation_based import functional

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
            functional.reset_net(model)
    return correct / len(x)


def job_spikeinit(s: Dict[str, Any], rec: Recorder) -> None:
    """SpikeInit's protocol: VGG-11 without normalization (LIF tau 2, hard reset to 0, threshold 0.5, T = 4) on
    Fashion-MNIST padded to 32 x 32, Adam, every method from the same seed; the epochs run round by round (epoch 1
    of every method, then epoch 2, ...) and a round starts only when the last one's time still fits."""
    import statistics
    import warnings

    import torch
    from spikingjelly.activation_based import functional

    import builders
    import snn_initplug as sip

    start = time.monotonic()
    device = torch.device(s["device"])
    rec["spikingjelly"] = spikingjelly_identity()
    backend_kwargs, rec["implementation"] = spikeinit_backend(rec.data["spikingjelly"]["legacy_api"], device)
    x_tr, y_tr, x_te, y_te = fashion_mnist_32(s, device)
    rec["train_images"], rec["test_images"] = len(x_tr), len(x_te)
    methods = spikeinit_methods(sip.apply.METHODS)
    runs: Dict[str, Any] = {}
    for method in methods:
        torch.manual_seed(0)
        model = builders.vgg11_no_norm(T=4, in_channels=1, width=s["width"], backend_kwargs=backend_kwargs).to(device)
        batch0 = x_tr[: s["calibration_batch"]]
        t0 = time.perf_counter()
        try:
            if method != "default":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sip.initialize(model, method, batch0, generator=torch.Generator().manual_seed(0), skip="readout",
                                   **SPIKEINIT_OPTIONS.get(method, {}))
            functional.reset_net(model)
            rates = [layer.rate for layer in sip.diagnose(model, batch0).layers]
            functional.reset_net(model)
        except Exception as exc:  # noqa: BLE001 - a method that refuses the model is a result too
            runs[method] = {"error": describe_failure(exc)["error"]}
            continue
        runs[method] = {"init_s": time.perf_counter() - t0, "epochs": [],
                        "rates_at_init": {"min": min(rates), "median": statistics.median(rates), "max": max(rates)},
                        "model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=s["lr"]),
                        "order": torch.Generator().manual_seed(0)}
    public = {m: {k: v for k, v in r.items() if k not in ("model", "optimizer", "order")} for m, r in runs.items()}
    rec["methods"] = public
    last_round = 0.0
    for epoch in range(1, s["epochs"] + 1):
        if time.monotonic() - start + last_round > s["seconds"]:
            rec["stopped"] = f"before epoch {epoch}: the last round took {last_round:.0f} s"
            break
        round_start = time.monotonic()
        for method, run in runs.items():
            if "error" in run:
                continue
            t0 = time.perf_counter()
            result = spikeinit_epoch(run["model"], run["optimizer"], x_tr, y_tr, s["batch"], run["order"])
            result.update(epoch=epoch, seconds=time.perf_counter() - t0, test_acc=evaluate_accuracy(run["model"], x_te, y_te))
            public[method]["epochs"].append(result)
            rec["methods"] = public
        last_round = time.monotonic() - round_start


JOBS = {"examples": job_examples, "init": job_init, "doctor": job_doctor, "spikeinit": job_spikeinit}


def worker_main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    rec = Recorder(Path(job["result"]))
    rec["started"] = time.time()
    try:
        JOBS[job["job"]](job["settings"], rec)
    except BaseException as exc:  # noqa: BLE001 - recorded; the parent reads the file
        traceback.print_exc()
        rec["error"] = describe_failure(exc)
        return 1
    rec["finished"] = time.time()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
