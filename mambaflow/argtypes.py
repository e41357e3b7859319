"""Command-line argument parsing shared by `mambaflow` and `mambaflow train`: a parser
whose errors are one line with exit code 2, and checked numeric argument types."""

from __future__ import annotations

import argparse
import math
import sys

from .errors import EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse with its error as one line (and exit code 2), not usage plus error."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is too small: it must be at least {low}")
        return v

    return parse


def finite_float(low: float, high: float = math.inf, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if v < low or (low_open and v == low) or v > high:
            where = f"{'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{v:g} is out of range: it must be {'in ' if math.isfinite(high) else ''}{where}")
        return v

    return parse
