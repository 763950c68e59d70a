"""Why CuPy can or cannot serve SpikingJelly 0.0.0.0.14's ``backend='cupy'``, in one place: used by the examples'
``-backend cupy``, by ``benchmarks/backend_speed.py`` and by the GPU check's parts.

CuPy fails in two ways that look alike to a user: ``import cupy`` fails (often a wheel built for another CUDA), or
CuPy imports but SpikingJelly's own ``import cupy; from . import neuron_kernel, cuda_utils`` failed inside a silent
``try`` and it says "CuPy is not installed!" (SpikingJelly issue #459). :func:`cupy_diagnosis` names the import
that failed and the wheel that matches torch's CUDA.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


def legacy_api(neuron_cls) -> bool:
    """True for SpikingJelly 0.0.0.0.14-style neurons (a ``backend=`` constructor argument; 2.x has none)."""
    return "backend" in inspect.signature(neuron_cls.__init__).parameters


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (CuPy wraps the real failure in its own ImportError)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def describe_failure(exc: BaseException) -> Dict[str, Any]:
    """What failed, in a user's words: the module that could not be imported and the first line of the error."""
    cause = root_cause(exc)
    frames = traceback.extract_tb(cause.__traceback__) if cause.__traceback__ else []
    text = str(cause).strip().splitlines()
    return {"error": f"{type(cause).__name__}: {text[0] if text else ''}".strip(),
            "module": getattr(cause, "name", None),
            "where": f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None,
            "outer": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}" if cause is not exc else None}


def cupy_distributions() -> List[str]:
    from importlib import metadata

    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("cupy"):
            names.add(f"{name}=={dist.version}")
    return sorted(names)


def cupy_wheel_for(torch_cuda: Optional[str]) -> Optional[str]:
    """The CuPy wheel built for torch's CUDA major version (``"13.0"`` -> ``"cupy-cuda13x"``)."""
    if not torch_cuda:
        return None
    return f"cupy-cuda{torch_cuda.split('.')[0]}x"


def cuda_library_hint(error: str, wanted: Optional[str]) -> str:
    match = re.search(r"lib[\w.+-]*\.so\.(\d+)", error)
    if not match:
        return ""
    return (f" CuPy looked for CUDA {match.group(1)} libraries" +
            (f"; torch here is built for another CUDA, so install {wanted} instead." if wanted and
             f"cuda{match.group(1)}x" not in wanted else "."))


def cupy_diagnosis(check_kernel: bool = True, check_spikingjelly: bool = True) -> Dict[str, Any]:
    """Whether CuPy can serve SpikingJelly 0.0.0.0.14's ``backend='cupy'`` here, and if not, why: the import
    that failed, the CuPy wheel that matches torch's CUDA, and SpikingJelly's silently swallowed import (#459)."""
    import torch

    wanted = cupy_wheel_for(torch.version.cuda)
    install = (f"pip install {wanted} (the snn-initplug[cupy-cuda{wanted[9:-1]}] extra)" if wanted else
               "a CUDA build of torch first, then the matching cupy-cudaXXx wheel")
    info: Dict[str, Any] = {"usable": False, "python": sys.executable, "torch_cuda": torch.version.cuda,
                            "wheel_for_torch": wanted, "distributions": cupy_distributions()}
    dists = info["distributions"]
    spec = importlib.util.find_spec("cupy")
    if spec is None:
        info["stage"] = "not installed"
        info["message"] = (f"CuPy is not installed in this Python ({sys.executable}). Install the wheel built for "
                           f"torch's CUDA {torch.version.cuda}: {install}.")
        return info
    info["location"] = str(Path(spec.origin).parent) if spec.origin else str(spec.submodule_search_locations)
    several = f" Several CuPy packages are installed ({', '.join(dists)}); keep only {wanted}." if len(dists) > 1 else ""
    mismatch = ""
    if wanted and dists and not any(d.startswith(wanted + "==") for d in dists):
        mismatch = (f" The installed {', '.join(dists)} does not match torch's CUDA {torch.version.cuda}: "
                    f"pip uninstall {' '.join(d.split('==')[0] for d in dists)} && {install}.")
    try:
        import cupy
    except BaseException as exc:  # noqa: BLE001 - a broken CuPy raises ImportError, OSError, RuntimeError...
        failure = describe_failure(exc)
        info.update(stage="import cupy", failure=failure)
        module = f" (module {failure['module']})" if failure["module"] else ""
        info["message"] = (f"CuPy is installed ({info['location']}) but `import cupy` failed{module}: "
                           f"{failure['error']}." + cuda_library_hint(failure["error"], wanted) + mismatch + several)
        return info
    info["version"] = getattr(cupy, "__version__", "unknown")
    if check_kernel and torch.cuda.is_available():
        try:  # SpikingJelly compiles its kernels with NVRTC at the first training step
            kernel = cupy.RawKernel(r'extern "C" __global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }', "twice")
            x = cupy.arange(4, dtype=cupy.float32)
            kernel((1,), (4,), (x,))
            if float(x.sum()) != 12.0:
                raise RuntimeError(f"a test kernel computed {x.get().tolist()} instead of [0, 2, 4, 6]")
            info["kernel"] = "a test kernel compiled and ran"
        except BaseException as exc:  # noqa: BLE001
            failure = describe_failure(exc)
            info.update(stage="compile a CUDA kernel", failure=failure)
            info["message"] = (f"CuPy {info['version']} imports but cannot compile and run a CUDA kernel (NVRTC): "
                               f"{failure['error']}." + cuda_library_hint(failure["error"], wanted) + mismatch + several)
            return info
    if check_spikingjelly:
        swallowed = spikingjelly_cupy_import()
        info["spikingjelly"] = swallowed
        if swallowed.get("failure"):
            failure = swallowed["failure"]
            missing = failure["module"] if failure["error"].startswith("ModuleNotFoundError") else None
            info.update(stage="SpikingJelly's CuPy modules", failure=failure)
            culprit = f" (module {failure['module']})" if failure["module"] else ""
            info["message"] = (f"CuPy {info['version']} imports, but SpikingJelly says \"CuPy is not installed!\": its "
                               f"`{swallowed['statement']}` in {swallowed['module']} failed silently (SpikingJelly "
                               f"issue #459). The import that failed: {swallowed['failed_import']}{culprit}: "
                               f"{failure['error']}" + (f". Fix: pip install {missing.split('.')[0]}" if missing else "")
                               + ".")
            return info
        if swallowed.get("uses_cupy") and check_kernel and torch.cuda.is_available():
            launch = spikingjelly_cupy_launch()
            info["spikingjelly"].update(launch)
            if launch.get("failure"):
                info.update(stage="SpikingJelly's CuPy neuron kernel", failure=launch["failure"])
                info["message"] = (f"CuPy {info['version']} imports and SpikingJelly 0.0.0.0.14 uses it, but its "
                                   f"LIFNode(backend='cupy') forward fails: {launch['failure']['error']}.")
                return info
    info["usable"] = True
    info["stage"] = "ok"
    info["message"] = f"CuPy {info['version']} imports" + (", compiles kernels" if "kernel" in info else "") + (
        " and SpikingJelly 0.0.0.0.14 uses it" if info.get("spikingjelly", {}).get("uses_cupy") else "") + "." + several
    return info


# the statement SpikingJelly 0.0.0.0.14's neuron.py runs inside `try: ... except BaseException` at import
SJ_CUPY_IMPORTS = ("cupy", "spikingjelly.activation_based.neuron_kernel", "spikingjelly.activation_based.cuda_utils")


def spikingjelly_cupy_import() -> Dict[str, Any]:
    """SpikingJelly 0.0.0.0.14 imports ``cupy, neuron_kernel, cuda_utils`` in one ``try`` and keeps
    ``neuron.cupy = None`` if any fails, logging the reason at INFO level only. Re-run those imports one by one
    to name the one that failed. Only for the legacy API (2.x has no CuPy backend)."""
    try:
        neuron = importlib.import_module("spikingjelly.activation_based.neuron")
    except BaseException as exc:  # noqa: BLE001
        return {"applies": False, "reason": f"SpikingJelly does not import: {describe_failure(exc)['error']}"}
    if not legacy_api(neuron.IFNode):
        return {"applies": False, "reason": "SpikingJelly 2.x: no CuPy backend (Triton instead)"}
    out = {"applies": True, "module": neuron.__name__, "statement": "import cupy; from . import neuron_kernel, cuda_utils",
           "uses_cupy": getattr(neuron, "cupy", None) is not None}
    if out["uses_cupy"]:
        return out
    for name in SJ_CUPY_IMPORTS:
        try:
            importlib.import_module(name)  # a module that failed before is not in sys.modules: this re-runs it
        except BaseException as exc:  # noqa: BLE001
            out.update(failed_import=name, failure=describe_failure(exc))
            return out
    out.update(failed_import="(none on retry)", failure={
        "error": "every import succeeds on retry: it failed only at SpikingJelly's first import (import order?)",
        "module": None, "where": None, "outer": None})
    return out


def legacy_cupy_numpy_alias() -> Optional[str]:
    """SpikingJelly 0.0.0.0.14's CuPy kernels check argument types against ``np.int``, an alias of the builtin
    ``int`` that NumPy 1.24 removed: with a current NumPy every ``backend='cupy'`` forward raises
    ``AttributeError: module 'numpy' has no attribute 'int'``. Put the alias back (what ``np.int`` always was) for
    this process. Returns the line to print, or None when this NumPy still has it."""
    with warnings.catch_warnings():  # NumPy 1.20-1.23 still have it, with a DeprecationWarning
        warnings.simplefilter("ignore")
        if hasattr(np, "int"):
            return None
    np.int = int  # type: ignore[attr-defined]
    return (f"NumPy {np.__version__} has no np.int, which SpikingJelly 0.0.0.0.14's CuPy kernels use: "
            "set numpy.int = int (the builtin it aliased) for this run")


def spikingjelly_cupy_launch() -> Dict[str, Any]:
    """One ``LIFNode(step_mode='m', backend='cupy')`` forward on CUDA, as the examples run it (with their ``np.int``
    alias, which a current NumPy needs: SpikingJelly's kernel launcher checks argument types against it)."""
    import torch

    out: Dict[str, Any] = {"numpy_alias": legacy_cupy_numpy_alias() or "not needed"}
    try:
        from spikingjelly.activation_based import neuron

        cell = neuron.LIFNode(step_mode="m", backend="cupy").cuda()
        spikes = cell(torch.full((4, 2, 8), 3.0, device="cuda"))
        torch.cuda.synchronize()
        out["launch"] = f"LIFNode(backend='cupy') ran, rate {float(spikes.mean()):.2f}"
    except BaseException as exc:  # noqa: BLE001
        out["failure"] = describe_failure(exc)
    return out
