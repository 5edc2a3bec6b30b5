"""Benchmarks: ``jambatalk bench [NAME] [--json PATH]``.

Each benchmark is a function ``run(quick: bool) -> list[Record]`` in a module of this package,
registered in :data:`BENCHMARKS`. Figures that have a natural baseline are measured against it
in the same run and reported as ratios (value / baseline_value).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputError

__all__ = ["Record", "BENCHMARKS", "run_benchmarks", "format_table", "cli_bench", "peak_rss_mb"]

#: name -> "module:function"
BENCHMARKS = {
    "scan": "jambatalk.bench.scan:run",
    "render": "jambatalk.bench.render:run",
    "preprocess": "jambatalk.bench.preprocess:run",
    "long": "jambatalk.bench.long:run",
    "stream": "jambatalk.bench.stream:run",
    "rtf": "jambatalk.bench.rtf:run",
    "train": "jambatalk.bench.train:run",
    "gpu": "jambatalk.bench.gpu:run",
}
#: benchmarks that ``jambatalk bench`` with no name runs only where they can: name -> "module:function" of a
#: check that raises an InputError saying why where the benchmark cannot run
CONDITIONAL = {"gpu": "jambatalk.bench.gpu:device_for_bench"}


@dataclass
class Record:
    name: str
    value: float
    unit: str
    baseline: Optional[str] = None
    baseline_value: Optional[float] = None
    ratio: Optional[float] = None
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.ratio is None and self.baseline_value not in (None, 0):
            self.ratio = self.value / self.baseline_value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_table(records: list[Record]) -> str:
    rows = [("benchmark", "value", "unit", "baseline", "baseline value", "ratio", "params")]
    for r in records:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items())
        rows.append((r.name, f"{r.value:.4g}", r.unit, r.baseline or "",
                     "" if r.baseline_value is None else f"{r.baseline_value:.4g}",
                     "" if r.ratio is None else f"{r.ratio:.3f}", params))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _call(target: str, **kwargs):
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)(**kwargs)


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}", f"choose from: {', '.join(BENCHMARKS)}")


def run_benchmarks(names: list[str] | None = None, quick: bool = False) -> list[Record]:
    """The records of the benchmarks ``names`` (default: all of them, less those of :data:`CONDITIONAL` that cannot
    run here). Each one left out, and each one as it starts, is named on stderr."""
    if not names:
        names = []
        for name in BENCHMARKS:
            try:
                if name in CONDITIONAL:
                    _call(CONDITIONAL[name])
            except InputError as exc:
                print(f"bench: {name} skipped: {exc.problem}", file=sys.stderr)
            else:
                names.append(name)
    check_names(names)
    records: list[Record] = []
    for i, name in enumerate(names, 1):  # each takes seconds to minutes: say which one is running
        print(f"bench: {name}" + (f" ({i} of {len(names)})" if len(names) > 1 else "") + " ...", file=sys.stderr,
              flush=True)
        records.extend(_call(BENCHMARKS[name], quick=quick))
    return records


def busy_machine() -> tuple[float, int] | None:
    """(load average over the last minute, CPUs) when other work keeps the machine busy (a load of 1 or more
    before the benchmarks start), else None (also where the load average is unknown)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    return (load, os.cpu_count() or 1) if load >= 1.0 else None


def cli_bench(args) -> int:
    from ..fileio import atomic_path, check_output_path

    if args.name:
        check_names([args.name])
    if args.json:
        check_output_path(args.json, file=True, suffix=".json")  # before the benchmarks, which take minutes
    if args.name in CONDITIONAL:
        _call(CONDITIONAL[args.name])  # one that cannot run here says why first
    busy = busy_machine()
    if busy:
        warnings.warn(f"the machine's load average is {busy[0]:.2f} on {busy[1]} CPUs: other work is running (or "
                      "just ran), so the figures may move by more than usual, and threads that wait on each other "
                      "can take several times longer; for figures to compare, run on an idle machine (ratios "
                      "within one benchmark are timed side by side and hold better than absolute times)",
                      stacklevel=2)
    records = run_benchmarks([args.name] if args.name else None, quick=args.quick)
    print(format_table(records))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
    return 0
