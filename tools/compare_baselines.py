"""Train JambaTalk and its baseline decoders under one budget and compare their held-out accuracy.

    python tools/compare_baselines.py --data data/synthetic --out runs/cmp [--seeds 0 1 2] \
        [--epochs 5] [--jobs 2] [--decoders jambatalk transformer faceformer mamba]
    python tools/compare_baselines.py --out runs/cmp --table-only

For every decoder and seed: ``jambatalk train --config <config> data.root=<data> train.epochs=<epochs>
train.seed=<seed>`` (one CPU thread), then ``tools/eval_default.py --silence-gate off`` on the corpus'
held-out split, written to ``<out>/<decoder>-s<seed>.json``. Runs whose JSON exists are not repeated,
so an interrupted comparison resumes; one trained with other epochs or on other data stops it. The table
counts the seeds asked for (all seeds found with --table-only). The corpus is generated first where --data does not hold one
(``jambatalk synth --sentences 300 --seed 0``, the corpus the default model is trained on).

It prints one table: per decoder the mean and standard deviation over seeds of LVE, the mean of
LVE / static template, MVE and FDD, and JambaTalk's mean LVE divided by each decoder's (below 1:
JambaTalk is ahead). ``--markdown`` prints it as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "jambatalk": ROOT / "configs" / "default.yaml",
    "transformer": ROOT / "configs" / "baselines" / "transformer.yaml",
    "faceformer": ROOT / "configs" / "baselines" / "faceformer.yaml",
    "mamba": ROOT / "configs" / "baselines" / "mamba.yaml",
}
LABELS = {"jambatalk": "JambaTalk", "transformer": "Transformer-only", "faceformer": "FaceFormer-style",
          "mamba": "Mamba-only"}


def _run(argv: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        from jambatalk.errors import TrainingError

        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise TrainingError(f"{' '.join(argv[2:4])} failed (exit {proc.returncode})"
                            + (f": {lines[-1].strip()[:300]}" if lines else ""), f"see {log}")


def run_one(decoder: str, seed: int, data: Path, out: Path, epochs: int) -> Path:
    """Train and evaluate one decoder at one seed; returns its JSON (kept if it exists already)."""
    name = f"{decoder}-s{seed}"
    result = out / f"{name}.json"
    if result.is_file() or (out / name / "last").is_dir():
        _check_same_budget(out / name, epochs, data)
    if result.is_file():
        return result
    # a run stopped part-way (or trained, then stopped in its evaluation) goes on from its last checkpoint
    resume = ["--resume"] if (out / name / "last" / "trainer_state.pt").is_file() else []
    _run([sys.executable, "-m", "jambatalk", "train", "--config", str(CONFIGS[decoder]), "--out", str(out / name),
          *resume, f"data.root={data}", f"train.epochs={epochs}", f"train.seed={seed}"], out / f"{name}.train.log")
    # eval_default writes its JSON whole or not at all: an existing one is a finished evaluation
    _run([sys.executable, str(ROOT / "tools" / "eval_default.py"), "--data", str(data), "--checkpoint",
          str(out / name / "best"), "--silence-gate", "off", "--json", str(result)], out / f"{name}.eval.log")
    return result


def _check_same_budget(run: Path, epochs: int, data: Path) -> None:
    """Stop where an earlier run in --out was trained with other epochs or on other data: its result would be
    reused (and its folder resumed) as if made with this comparison's."""
    import yaml

    path = run / "last" / "experiment.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return
    had = {"epochs": (saved.get("train") or {}).get("epochs"), "data": (saved.get("data") or {}).get("root")}
    want = {"epochs": epochs, "data": str(data)}
    changed = [f"{k} {had[k]} (asked: {want[k]})" for k in want if had[k] is not None and str(had[k]) != str(want[k])]
    if changed:
        raise SystemExit(f"compare_baselines: {run} was trained with {', '.join(changed)}; its result would be "
                         "reused as this comparison's. Use another --out, or delete that run and its JSON")


def collect(out: Path, decoders: list[str], seeds: list[int] | None = None) -> dict[str, list[dict]]:
    """decoder -> the held-out results ({"model": {...}, "static": {...}, "lve_ratio": r}) of each seed (of
    ``seeds`` only, when given)."""
    found: dict[str, list[dict]] = {}
    for decoder in decoders:
        for path in sorted(out.glob(f"{decoder}-s*.json")):
            if not path.stem.split("-s")[-1].isdigit():
                continue
            if seeds is not None and int(path.stem.split("-s")[-1]) not in seeds:
                continue
            try:
                found.setdefault(decoder, []).append(json.loads(path.read_text())["heldout"]["all"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise SystemExit(f"compare_baselines: {path} is not an eval_default.py result ({exc}); "
                                 f"delete it and run again") from exc
    return found


def summarise(found: dict[str, list[dict]]) -> list[dict]:
    """One row per decoder: n seeds, LVE mean / SD, mean LVE ratio to static, MVE, FDD, JambaTalk / it."""
    rows = []
    for decoder, runs in found.items():
        lve = [r["model"]["lve"] for r in runs]
        rows.append({
            "decoder": decoder, "seeds": len(runs), "lve": statistics.mean(lve),
            "lve_sd": statistics.stdev(lve) if len(lve) > 1 else 0.0,
            "lve_ratio": statistics.mean(r["lve_ratio"] for r in runs),
            "mve": statistics.mean(r["model"]["mve"] for r in runs),
            "fdd": statistics.mean(r["model"]["fdd"] for r in runs),
        })
    jt = next((r["lve"] for r in rows if r["decoder"] == "jambatalk"), None)
    for row in rows:
        row["jambatalk_over"] = None if jt is None else jt / row["lve"]
    return rows


def format_rows(rows: list[dict], markdown: bool = False) -> str:
    head = ["decoder", "seeds", "LVE (m^2), mean +- SD", "LVE / static", "MVE (m)", "FDD", "JambaTalk LVE / this"]
    body = [[LABELS.get(r["decoder"], r["decoder"]), str(r["seeds"]), f"{r['lve']:.3e} +- {r['lve_sd']:.1e}",
             f"{r['lve_ratio']:.3f}", f"{r['mve']:.3e}", f"{r['fdd']:.3e}",
             "" if r["jambatalk_over"] is None else f"{r['jambatalk_over']:.3f}"] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [head] + body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic", help="the synthetic corpus (generated if absent)")
    parser.add_argument("--out", default="runs/cmp", help="runs and results go here")
    parser.add_argument("--decoders", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (5: 300 steps of batch 4)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one CPU thread each")
    parser.add_argument("--table-only", action="store_true", help="only print the table of the results in --out")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.table_only:
        data = Path(args.data).resolve()
        out.mkdir(parents=True, exist_ok=True)
        if not (data / "vertices_npy").is_dir():  # generated once here, not by parallel trainings
            _run([sys.executable, "-m", "jambatalk", "synth", "--dst", str(data), "--sentences", "300", "--seed", "0"],
                 out / "synth.log")
        jobs = [(d, s) for s in args.seeds for d in args.decoders]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for done in pool.map(lambda job: run_one(job[0], job[1], data, out.resolve(), args.epochs), jobs):
                print(f"compare_baselines: {done}", flush=True)
    found = collect(out, args.decoders, None if args.table_only else args.seeds)
    if not found:
        print(f"compare_baselines: no results in {out} (run without --table-only first)", file=sys.stderr)
        return 1
    print(format_rows(summarise(found), args.markdown))
    return 0


if __name__ == "__main__":
    from jambatalk.errors import script_exit

    sys.exit(script_exit("compare_baselines", main))
