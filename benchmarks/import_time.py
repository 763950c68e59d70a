"""Import cost of snn_initplug, each measured in a fresh interpreter in one run.

    python benchmarks/import_time.py

Prints the wall time of `import snn_initplug` (lazy: no torch), of `import torch` alone, and of touching the
public API (which imports torch, numpy, scipy.special and the package core), and the package's own overhead
on top of torch as a ratio.
"""
import subprocess
import sys
import time


def timed(code: str, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    empty = timed("pass")
    package = timed("import snn_initplug") - empty
    torch_only = timed("import torch") - empty
    api = timed("import snn_initplug as s; s.NeuronSpec; s.surrogate_moments") - empty
    print(f"import snn_initplug            {package * 1e3:8.1f} ms")
    print(f"import torch                   {torch_only * 1e3:8.1f} ms")
    print(f"snn_initplug public API        {api * 1e3:8.1f} ms")
    print(f"overhead of the API over torch {max(api - torch_only, 0) * 1e3:8.1f} ms  (ratio {api / torch_only:.2f}x)")
