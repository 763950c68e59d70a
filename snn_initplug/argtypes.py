"""argparse types that check a value while parsing (a typo stops a command before any work) and a parser whose
errors are one line: the command line's, the examples' and the benchmarks' (one definition). Imports no torch,
so a script that only parses its arguments, or says why it has nothing to do, starts in a blink."""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable

__all__ = ["number_in", "positive_int", "seed", "relay_share", "writable_file", "plot_file", "OneLineParser"]


def number_in(kind: type, accepts: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` when ``accepts`` it, else one line saying ``expected <what>``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number_in(int, lambda n: n > 0, "a positive integer")
seed = number_in(int, lambda n: 0 <= n < 2**63, "an integer seed in [0, 2**63)")
relay_share = number_in(float, lambda r: 0.0 <= r <= 1.0, "a relay share in [0, 1]")


def writable_file(text: str) -> str:
    """A path whose folder exists (checked before any work, so a typo does not cost a whole run)."""
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist (create it first)")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    return text


def plot_file(text: str) -> str:
    """A writable path whose extension matplotlib can save (checked before any work, not after the run)."""
    text = writable_file(text)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise argparse.ArgumentTypeError("--plot needs matplotlib (pip install matplotlib)") from None
    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(text)[1].lstrip(".").lower()
    if extension not in formats:
        raise argparse.ArgumentTypeError(f"matplotlib cannot save the format {extension or '(none)'!r} of {text}; "
                                         f"use one of {', '.join(sorted(formats))}")
    return text


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``snn-initplug init: error: ...``) with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
