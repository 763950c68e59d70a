"""SpikingJelly issue #459 on demand: ``python gpu_simulate_459.py MODULE`` makes ``import MODULE`` fail, then prints
(``RESULT {json}``) what the CuPy diagnosis and the examples' ``-backend cupy`` say. With CuPy importable and
MODULE one that SpikingJelly 0.0.0.0.14 imports only inside its silent ``try``, both must name MODULE."""
from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path


class Block(importlib.abc.MetaPathFinder):
    """An import finder that refuses one module, as a missing dependency would."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, name, path, target=None):
        if name == self.name:
            raise ImportError(f"simulated failure: {name} cannot be imported", name=name)
        return None


def main(blocked: str) -> None:
    sys.meta_path.insert(0, Block(blocked))  # before anything imports SpikingJelly
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import torch
    from spikingjelly.activation_based import neuron

    import common
    import cupy_doctor

    diagnosis = cupy_doctor.cupy_diagnosis(check_kernel=False)
    try:
        common.sj_backend(neuron.IFNode, "cupy", torch.device("cuda"))
        example = "no error"
    except SystemExit as exc:
        example = str(exc.code)
    print("RESULT " + json.dumps({"message": diagnosis["message"], "stage": diagnosis["stage"], "example": example}))


if __name__ == "__main__":
    main(sys.argv[1])
