r"""The ``snn-initplug`` command.

::

    snn-initplug diagnose MODEL --input-shape 4,1,28,28 [--init METHOD ...] [--classes K] [--json out.json] [--plot out.png]
    snn-initplug init MODEL --input-shape 4,1,28,28 --out weights.pt [--method METHOD] [--seed N]
    snn-initplug surrogates [--normal MEAN STD]

``MODEL`` is ``package.module:factory`` or ``path/to/file.py:factory``; ``factory()`` returns the model, or a
pair ``(model, forward)`` with ``forward(model, x) -> output`` for models that need a loop over time steps.
The input is ``torch.rand(*shape)`` (``--binary``: Bernoulli spikes with those probabilities), drawn from
``--seed``; the factory runs after ``torch.manual_seed(seed)`` too, so every run builds the same model.
``--steps T`` calls the model T times on the input and stacks the outputs (one call per time step, as for an
snnTorch ``nn.Sequential`` with ``init_hidden=True``; the neuron states are reset first).

Errors (a bad model path, a model that does not run on the shape, no neurons) are one line on stderr and exit
status 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .argtypes import OneLineParser, plot_file, positive_int, relay_share, seed, writable_file

__all__ = ["main", "builtin_surrogates", "load_factory", "CommandError"]

AS_BUILT = "as-built"


class CommandError(Exception):
    """An error reported as one line on stderr."""


# --------------------------------------------------------------------------------------------------------
# Loading the model
# --------------------------------------------------------------------------------------------------------
def load_factory(spec: str) -> Callable[[], Any]:
    """``pkg.mod:make_model`` or ``path/to/file.py:make_model`` -> the callable."""
    location, sep, attribute = spec.rpartition(":")
    if not sep or not location or not attribute:
        raise CommandError(f"model must be 'module:factory' or 'path/to/file.py:factory', got {spec!r}")
    if location.endswith(".py") or os.sep in location or "/" in location:
        module = _import_file(location)
    else:
        _import_from_working_directory()
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise CommandError(f"cannot import module {location!r}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if factory is None:
        raise CommandError(f"{location!r} has no attribute {attribute!r}")
    if not callable(factory):
        raise CommandError(f"{spec!r} is not callable")
    return factory


def _import_from_working_directory() -> None:
    """Let ``my_models:make`` import ``./my_models.py``, as ``python -m`` would: the console script's
    ``sys.path`` starts with its own bin folder, not the folder it was started from."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(path: str):
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    name = "_snn_initplug_model_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # a path Python has no loader for
        raise CommandError(f"cannot load {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: one line, no traceback
        sys.modules.pop(name, None)
        raise CommandError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    return module


def build_model(factory: Callable[[], Any], seed: int) -> tuple[nn.Module, Optional[Callable]]:
    """Call the factory under ``torch.manual_seed(seed)``: a model, or ``(model, forward)``."""
    torch.manual_seed(seed)
    try:
        built = factory()
    except Exception as exc:  # noqa: BLE001
        raise CommandError(f"the factory failed: {type(exc).__name__}: {exc}") from exc
    model, forward = built if isinstance(built, tuple) and len(built) == 2 else (built, None)
    if not isinstance(model, nn.Module):
        raise CommandError(f"the factory must return a torch.nn.Module (or (model, forward)), got {type(model).__name__}")
    if forward is not None and not callable(forward):
        raise CommandError("the factory's forward must be callable(model, x)")
    return model, forward


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"shape must be integers separated by commas, e.g. 4,1,28,28; got {text!r}") from exc
    if not shape or any(n <= 0 for n in shape):
        raise argparse.ArgumentTypeError(f"shape must be positive integers, got {text!r}")
    return shape


def make_input(shape: Sequence[int], binary: bool, seed: int) -> torch.Tensor:
    """``torch.rand(*shape)``, or Bernoulli spikes with those probabilities, from a generator seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=generator)
    return torch.bernoulli(x, generator=generator) if binary else x


def _stepped(forward: Optional[Callable], steps: Optional[int]) -> Optional[Callable]:
    """With ``--steps T``: reset the neuron states, then call the model T times on the input and stack."""
    if not steps:
        return forward

    def run(model, x):
        from .planning import first_tensor, neuron_modules, reset_neuron

        for _, neuron in neuron_modules(model):
            reset_neuron(neuron)
        outputs = [first_tensor(forward(model, x) if forward else model(x)) for _ in range(steps)]
        if any(out is None for out in outputs):
            raise CommandError("--steps: the model returned no tensor to stack over the time steps")
        return torch.stack([out for out in outputs if out is not None])

    return run


# --------------------------------------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------------------------------------
class _RandomLabelLoss:
    """Cross-entropy against seeded random labels in [0, classes), one per sample of the time-averaged output;
    ``description`` is what diagnose prints for the loss."""

    def __init__(self, classes: int, seed: int):
        self.classes, self.seed = classes, seed
        self.description = f"cross-entropy of the time-averaged output vs seeded random labels in [0, {classes})"

    def __call__(self, output: Any) -> torch.Tensor:
        from .diagnostics import default_loss
        from .planning import first_tensor

        classes = self.classes
        out = first_tensor(output)
        if out is None or out.dim() < 2 or out.shape[-1] != classes:
            raise CommandError(f"--classes {classes}: the output (shape {tuple(getattr(out, 'shape', ()))}) must "
                               f"end with {classes} class scores")
        labels = torch.randint(classes, out.shape[-2:-1], generator=torch.Generator().manual_seed(self.seed + 1))
        return default_loss(out, labels.to(out.device))[0]


RELAY_METHODS = ("auto", "spike_aware", "calibrated")  # the methods that take relay=


def _initialize(model, method, x, forward, seed, relay=None):
    from .apply import initialize

    options = {"relay": relay} if relay is not None and method in RELAY_METHODS else {}
    return initialize(model, method, x, generator=torch.Generator().manual_seed(seed), forward=forward, **options)


def _label(method: str, relay) -> str:
    return f"{method}+relay{relay:g}" if relay is not None and method in RELAY_METHODS else method


def cmd_diagnose(args) -> int:
    from .diagnostics import compare, diagnose, plot_comparison

    if args.relay is not None and not any(method in RELAY_METHODS for method in args.init or []):
        raise CommandError(f"--relay applies to {' and '.join(RELAY_METHODS)} given with --init, not to "
                           f"{', '.join(args.init or [AS_BUILT])}")
    factory = load_factory(args.model)
    x = make_input(args.input_shape, args.binary, args.seed)
    loss_fn = _RandomLabelLoss(args.classes, args.seed) if args.classes else None
    records = {}
    for method in args.init or [AS_BUILT]:
        model, forward = build_model(factory, args.seed)
        forward = _stepped(forward, args.steps)
        if method != AS_BUILT:
            _initialize(model, method, x, forward, args.seed, args.relay)
        label = _label(method, args.relay)
        records[label] = diagnose(model, x, loss_fn=loss_fn, forward=forward, label=label)
    for record in records.values():
        print(record)
        print()
    if len(records) > 1:
        print(compare(records))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({label: record.to_dict() for label, record in records.items()}, handle, indent=2, default=str)
            handle.write("\n")
    if args.plot:
        plot_comparison(records, path=args.plot)
    return 0


def cmd_init(args) -> int:
    if args.relay is not None and args.method not in RELAY_METHODS:
        raise CommandError(f"--relay applies to {', '.join(RELAY_METHODS[:-1])} and {RELAY_METHODS[-1]}, not {args.method}")
    factory = load_factory(args.model)
    model, forward = build_model(factory, args.seed)
    forward = _stepped(forward, args.steps)
    x = make_input(args.input_shape, args.binary, args.seed)
    report = _initialize(model, args.method, x, forward, args.seed, args.relay)
    print(report)
    torch.save(model.state_dict(), args.out)
    print(f"saved the state_dict to {args.out}")
    return 0


def builtin_surrogates() -> list[tuple[str, str, Any]]:
    """``(framework, name, spike function)`` for every built-in surrogate of the installed frameworks
    (:func:`snn_initplug.adapters.surrogates.builtin_surrogates`)."""
    from .adapters.surrogates import builtin_surrogates as listed

    return listed()


def _clipped(exc: Exception, limit: int = 110) -> str:
    """One short line: some framework errors print whole tensors."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cmd_surrogates(args) -> int:
    from .surrogate import Normal, SurrogateError, Uniform, surrogate_moments

    distribution = Normal(*args.normal) if args.normal else Uniform(-1.0, 1.0)
    rows = builtin_surrogates()
    if not rows:
        print("neither snnTorch nor SpikingJelly is installed: no built-in surrogates to list")
        return 0
    print(f"x = u - threshold ~ {distribution}; kappa = 1/E[h] (IKUN's gain: Var(W) = kappa/fan_in)")
    table = [["framework", "surrogate", "E[h]", "E[h^2]", "kappa", "method"]]
    for framework, name, fn in rows:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = surrogate_moments(fn, distribution, stochastic="monte-carlo")
        except SurrogateError as exc:
            table.append([framework, name, "-", "-", "-", f"unusable: {_clipped(exc)}"])
            continue
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.params.items()
                           if not callable(v))
        kappa = f"{1 / m.m1:.6g}" if m.m1 > 0 else "inf"
        table.append([framework, f"{m.kind}({params})", f"{m.m1:.6g}", f"{m.m2:.6g}", kappa, m.method])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


# --------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------
def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="package.module:factory or path/to/file.py:factory")
    parser.add_argument("--input-shape", "-i", type=parse_shape, required=True, metavar="SHAPE",
                        help="shape of the example input, e.g. 4,1,28,28 (time first for multi-step models)")
    parser.add_argument("--binary", action="store_true", help="Bernoulli spikes instead of torch.rand values")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the model, the input and the weights (default 0)")
    parser.add_argument("--steps", "-T", type=positive_int, default=None, metavar="T",
                        help="call the model T times on the input and stack the outputs (one call per time step)")
    parser.add_argument("--relay", type=relay_share, default=None, metavar="RHO",
                        help="relay structure for spike_aware and calibrated (e.g. 0.9; 1: the copy relay; deep plain stacks)")


def build_parser() -> argparse.ArgumentParser:
    from .apply import METHODS

    parser = OneLineParser(prog="snn-initplug", description="Weight initialization and diagnostics for "
                                     "snnTorch and SpikingJelly networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    diagnose = commands.add_parser("diagnose", help="firing rates, membrane and gradient statistics per layer")
    _add_model_arguments(diagnose)
    diagnose.add_argument("--init", nargs="+", choices=(AS_BUILT,) + tuple(METHODS), metavar="METHOD",
                          help=f"initialize a fresh model with each method first ({AS_BUILT}: as the factory built it)")
    diagnose.add_argument("--classes", type=positive_int, default=None, metavar="K",
                          help="also measure gradient norms, for the cross-entropy against seeded random labels in [0, K)")
    diagnose.add_argument("--json", metavar="PATH", type=writable_file, help="write {label: record} as JSON")
    diagnose.add_argument("--plot", metavar="PATH", type=plot_file, help="plot rate, membrane sd/θ and gradient norm against depth")
    diagnose.set_defaults(run=cmd_diagnose)

    init = commands.add_parser("init", help="initialize a model and save its state_dict")
    _add_model_arguments(init)
    init.add_argument("--method", "-m", default="auto", choices=METHODS,
                      help="the init method (default: auto, the one call: the recipe for this model)")
    init.add_argument("--out", "-o", required=True, metavar="PATH", type=writable_file, help="where to save the state_dict (torch.save)")
    init.set_defaults(run=cmd_init)

    surrogates = commands.add_parser("surrogates", help="the built-in surrogates of the installed frameworks, "
                                     "with kappa = 1/E[h] and the moments of h")
    surrogates.add_argument("--normal", nargs=2, type=float, metavar=("MEAN", "STD"),
                            help="x ~ N(MEAN, STD^2) instead of Uniform(-1, 1)")
    surrogates.set_defaults(run=cmd_surrogates)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0, or 2 after an error reported on stderr)."""
    args = build_parser().parse_args(argv)
    from .errors import SnnInitError

    try:
        return args.run(args)
    except KeyboardInterrupt:  # the entry points put the model back; one line, the shell's status for Ctrl-C
        print(f"snn-initplug {args.command}: interrupted", file=sys.stderr)
        return 130
    # the package's own errors (and a missing module or an unwritable file) are one line; a bug keeps its traceback
    except (CommandError, SnnInitError, ImportError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"snn-initplug {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
