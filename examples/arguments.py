"""Command-line argument helpers shared by the examples and the benchmarks: one-line errors (exit status 2) and
argparse types that check a value while parsing, so a typo stops a script before any work."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Dict

# the CLI's argparse types and one-line parser (torch-free), re-exported for the examples and the benchmarks
from snn_initplug.argtypes import OneLineParser, number_in, positive_int, relay_share  # noqa: F401


count = number_in(int, lambda n: n >= 0, "a non-negative integer")
positive_float = number_in(float, lambda x: x > 0, "a positive number")
non_negative_float = number_in(float, lambda x: x >= 0, "a non-negative number")
positive_finite = number_in(float, lambda x: math.isfinite(x) and x > 0, "a positive finite number")
beta = number_in(float, lambda b: 0 <= b <= 1, "a decay in [0, 1]")  # snnTorch's beta
tau = number_in(float, lambda t: t > 1, "a time constant > 1")  # SpikingJelly's tau; 1 would discard the membrane


def existing_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path


def split_method(name: str, relay: float = 0.9):
    """``"calibrated:relay"`` -> ``("calibrated", {"relay": relay})``; ``"ikun"`` -> ``("ikun", {})``.

    ``:relay`` adds the relay structure (``relay=`` of spike_aware, and of calibrated's start) for deep plain
    stacks; ``none`` (or ``default`` in the benchmarks) leaves the framework's own initialization."""
    method, _, structure = name.partition(":")
    if structure == "relay":
        return method, {"relay": relay}
    if structure:
        raise SystemExit(f"error: unknown structure {structure!r} in {name!r} (only ':relay')")
    return method, {}


def init_option(item: str):
    """``"sigma_u=0.8"`` -> ``("sigma_u", 0.8)``: the value as JSON when it parses (numbers, true, null), else
    the string. The type of ``-init-opt``, so a malformed option stops the script before any work."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parse_init_options(items) -> Dict[str, Any]:
    """``["sigma_u=0.8", "steps=4"]`` (or the pairs ``-init-opt`` already parsed) -> ``{"sigma_u": 0.8, "steps": 4}``."""
    options = {}
    for item in items:
        if isinstance(item, str):
            try:
                item = init_option(item)
            except argparse.ArgumentTypeError as exc:
                raise SystemExit(f"error: -init-opt: {exc}") from None
        key, value = item
        options[key] = value
    return options
