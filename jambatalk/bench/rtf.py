"""``jambatalk bench rtf``: real-time factor of inference on CPU, JambaTalk against its baselines.

Real-time factor = compute seconds / audio seconds (below 1: faster than real time). Models, all with
random weights and the same audio encoder: configs/default.yaml's model ("jambatalk"), and the decoders
of configs/baselines/{transformer,faceformer,mamba}.yaml on that model (mesh: the synthetic head, 30 fps).

Per audio length (10 s, 60 s, 600 s; ``--quick``: 10 s and 60 s), two fresh processes: one times
JambaTalk, Transformer-only and Mamba-only in interleaved rounds, each figure the shortest of its rounds
(15 at 10 s, 5 at 60 s, 2 at 600 s), so that their ratios compare one process and one machine state;
the other times the FaceFormer-style model, over as many rounds where its generation takes under
``FF_ROUNDS_BUDGET_S`` in all (10 s), else once. Records:

* ``rtf/<model>/total/<len>``: the whole inference (JambaTalk.predict: windowed encoder, decoder,
  head; for FaceFormer the same encoder path, then its frame-by-frame ``generate``);
* ``rtf/<model>/decoder/<len>``: the decoder and vertex head alone (the encoder is shared);
* ``rtf/encoder/<len>``: the shared encoder path (measured on JambaTalk's encoder);
* ``rtf/encoder_vs_transformers_forward/<len>`` (10 s, 60 s): that encoder path against the same encoder
  with transformers' own conv feature encoder forward (not the time-major one), as a ratio;
* ``rtf/jambatalk_vs_<baseline>/{total,decoder}/<len>``: ratio = JambaTalk time / baseline time (of the
  shortest rounds); for the baselines timed in JambaTalk's process the params add the ratios round by
  round (JambaTalk's time in a round over the baseline's in the same round): their median and quartiles
  (``round_ratio_median``, ``round_ratio_q1``, ``round_ratio_q3``), how far the ratio moves with the
  machine's state;
* ``rtf/<model>/growth_<max>_vs_10s``: real-time factor at the longest length / at 10 s (1.0 = linear).

FaceFormer-style generation re-decodes the whole prefix for every frame (no key/value cache, as
FaceFormer), so its cost grows as T^2 passes. When a first estimate of it exceeds the time budget
(``BUDGET_S``; quick: ``QUICK_BUDGET_S``), single generation steps are timed at several prefix lengths,
a quadratic a + b L + c L^2 is fitted, and the sum over L = 1..T is reported instead, its unit marked
"(extrapolated)" and its params ``extrapolated=True``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import Record

__all__ = ["run", "case", "round_ratios", "MODELS", "build", "BUDGET_S", "QUICK_BUDGET_S"]

MODELS = ("jambatalk", "transformer", "faceformer", "mamba")
BASELINES = ("transformer", "faceformer", "mamba")
#: seconds of FaceFormer-style generation measured directly before the figure is extrapolated
BUDGET_S = 300.0
#: FaceFormer-style generation is timed over several rounds while they fit in this many seconds
FF_ROUNDS_BUDGET_S = 30.0
QUICK_BUDGET_S = 15.0
#: the encoder is also timed with transformers' own feature encoder forward up to this length
STOCK_ENCODER_MAX_S = 60.0
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FPS = 30.0  # the synthetic corpus' frame rate (configs/default.yaml trains on it)

_CHILD = ("import sys, json; from jambatalk.bench.rtf import case; "
          "print(json.dumps(case(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))))")


def _model_section(name: str) -> dict:
    import yaml

    from ..errors import InputError

    path = CONFIGS / ("default.yaml" if name == "jambatalk" else f"baselines/{name}.yaml")
    if not path.is_file():
        raise InputError(f"bench rtf needs the config '{path}', which is missing",
                         "run it from a source checkout of jambatalk (pip install -e .)")
    return yaml.safe_load(path.read_text())["model"]


def build(name: str):
    """(JambaTalk model, FaceFormerDecoder or None) with random weights for one of :data:`MODELS`.

    For "faceformer" the JambaTalk model supplies the shared encoder and projection (its own decoder is
    unused) and the returned FaceFormerDecoder replaces decoder + head.
    """
    import numpy as np
    import torch

    from ..config import ModelConfig, from_dict
    from ..model import JambaTalk
    from ..model.faceformer import FaceFormerDecoder
    from ..synth import default_head

    section = _model_section(name)
    decoder = dict(section.get("decoder") or {})
    kind, period = decoder.pop("type", "jamba"), decoder.pop("period", 0)
    section["decoder"] = decoder
    head = default_head()
    section.update(n_vertices=head.n_vertices, fps=FPS, lip_reader={"enabled": False})
    cfg = from_dict(ModelConfig, section, "model")
    torch.manual_seed(0)
    model = JambaTalk(cfg, template=np.asarray(head.vertices, np.float32)).eval()
    ff = None
    if kind == "faceformer":
        ff = FaceFormerDecoder.from_config(cfg.decoder, cfg.n_vertices, cfg.fps, period).eval()
        torch.nn.init.normal_(ff.head.weight, std=1e-3)  # non-zero feedback, as a trained model's
    return model, ff


def _encode(model, audio, window_seconds: float = 20.0, context_seconds: float = 2.0):
    """The encoder stage of JambaTalk.predict -> decoder input (1, T, D)."""
    return model._predict_input(audio, None, window_seconds, context_seconds, None)


def _jamba_decode(model, x, window_seconds: float = 20.0):
    """The decoder stage of JambaTalk.predict (decoder, head) on its input x (1, T, D) -> (T, V, 3) numpy."""
    return model._predict_output(x, model.template, window_seconds)


def _ff_decode(model, ff, x):
    return (ff.generate(x)[0].view(x.shape[1], -1, 3) + model.template).cpu().numpy()


def _best(fn, reps: int) -> float:
    """Shortest wall time of ``reps`` calls of fn()."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _ff_estimate(ff, x) -> float:
    """Seconds ff.generate(x) would take: single steps timed (shortest of 5) at prefix lengths up to
    min(T, 1024), a non-negative fit a + b L + c L^2, summed over L = 1..T."""
    import numpy as np
    import torch
    from scipy.optimize import nnls

    T = x.shape[1]
    lengths = sorted({L for L in (1, 4, 16, 64, 128, 256, 512, 768, 1024) if L <= T} | {min(T, 1024)})
    ff.next_frame(torch.zeros(1, lengths[-1], ff.d_model), x)  # warm-up at the largest size
    inputs = torch.randn(1, lengths[-1], ff.d_model) * 0.1
    times = [_best(lambda L=L: ff.next_frame(inputs[:, :L], x), 5) for L in lengths]
    L = np.asarray(lengths, np.float64)
    coef, _ = nnls(np.stack([np.ones_like(L), L, L * L], axis=1), np.asarray(times))
    n = float(T)
    return float(coef[0] * n + coef[1] * n * (n + 1) / 2 + coef[2] * n * (n + 1) * (2 * n + 1) / 6)


def _rounds(seconds: float) -> int:
    """Timed rounds per model: each figure is the shortest of them (the machine may be shared)."""
    return 15 if seconds <= 10 else 5 if seconds <= 60 else 2


def case(names: str, seconds: float, budget_s: float = BUDGET_S, rounds: int = 0) -> list[dict]:
    """Measurements in this process: total, decoder-only and encoder seconds for ``seconds`` of audio,
    one dict per model of ``names`` (comma-separated).

    Models without a FaceFormer-style decoder are timed in interleaved rounds (every model once per
    round, the order reversed every other round) and each figure is the shortest over ``rounds``
    (default :func:`_rounds`): their ratios then compare the same process, allocator and machine
    state, and the shared encoder's spread between processes drops out. A FaceFormer-style model
    is timed over the same rounds where they fit in ``FF_ROUNDS_BUDGET_S``, else once (its generation
    takes minutes at 60 s), and must be the only name.
    """
    import numpy as np
    import torch

    torch.set_flush_denormal(True)
    names = names.split(",")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    rounds = rounds or _rounds(seconds)
    built = {name: build(name) for name in names}
    if len(names) > 1 and any(ff is not None for _, ff in built.values()):
        raise ValueError("bench rtf: time a FaceFormer-style model on its own")
    outs = {name: {"model": name, "audio_s": seconds, "threads": torch.get_num_threads(), "extrapolated": False,
                   "rounds": rounds, "encoder_s": float("inf"), "decoder_s": float("inf"), "total_s": float("inf"),
                   "round_decoder_s": [], "round_total_s": []}
            for name in names}
    with torch.no_grad():
        for model, ff in built.values():  # warm-up on 1 s
            x1 = _encode(model, audio[:16000])
            if ff is not None:
                _ff_decode(model, ff, x1)
            else:
                _jamba_decode(model, x1)
        if len(names) == 1 and built[names[0]][1] is not None:
            model, ff = built[names[0]]
            out = outs[names[0]]
            x = _encode(model, audio)
            out["frames"] = int(x.shape[1])
            out["estimate_s"] = _ff_estimate(ff, x)
            # as many rounds as the others where generation is quick (10 s of audio), else one
            out["rounds"] = rounds if out["estimate_s"] * rounds <= FF_ROUNDS_BUDGET_S else 1
            out["encoder_s"] = _best(lambda: _encode(model, audio), out["rounds"])
            if out["estimate_s"] <= budget_s:
                out["decoder_s"] = _best(lambda: _ff_decode(model, ff, x), out["rounds"])
            else:
                out["decoder_s"], out["extrapolated"] = out["estimate_s"], True
            out["total_s"] = out["encoder_s"] + out["decoder_s"]
            return [out]
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                model, out = built[name][0], outs[name]
                t0 = time.perf_counter()
                x = _encode(model, audio)
                t1 = time.perf_counter()
                _jamba_decode(model, x)
                t2 = time.perf_counter()
                model.predict(audio)
                t3 = time.perf_counter()
                out["frames"] = int(x.shape[1])
                for key, seconds_taken in (("encoder_s", t1 - t0), ("decoder_s", t2 - t1), ("total_s", t3 - t2)):
                    out[key] = min(out[key], seconds_taken)
                out["round_decoder_s"].append(t2 - t1)
                out["round_total_s"].append(t3 - t2)
                if name == "jambatalk" and seconds <= STOCK_ENCODER_MAX_S:
                    out["encoder_stock_s"] = min(out.get("encoder_stock_s", float("inf")),
                                                 _best(lambda m=model: _encode_stock(m, audio), 1))
    return [outs[name] for name in names]


def _encode_stock(model, audio):
    """:func:`_encode` with transformers' own feature encoder forward instead of the time-major one."""
    fe = model.audio_encoder.wav2vec.feature_extractor
    fe.time_major = False
    try:
        return _encode(model, audio)
    finally:
        del fe.time_major


def round_ratios(a: dict, b: dict, part: str) -> dict:
    """Median and quartiles of a's time over b's round by round (``round_<part>_s``, the same rounds of one
    process), as ``round_ratio_{median,q1,q3}``; empty where the two were not timed in the same rounds."""
    import numpy as np

    ta, tb = a.get(f"round_{part}_s") or [], b.get(f"round_{part}_s") or []
    if not ta or len(ta) != len(tb):
        return {}
    q1, median, q3 = np.percentile(np.asarray(ta) / np.asarray(tb), [25, 50, 75])
    return {"round_ratio_median": round(float(median), 4), "round_ratio_q1": round(float(q1), 4),
            "round_ratio_q3": round(float(q3), 4)}


def _run_case(names: str, seconds: float, budget_s: float) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, names, str(seconds), str(budget_s)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        print(f"bench rtf: {names} at {seconds:g} s failed: {tail[0]}", file=sys.stderr)
        return []
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Record]:
    lengths = (10.0, 60.0) if quick else (10.0, 60.0, 600.0)
    budget = QUICK_BUDGET_S if quick else BUDGET_S
    results: dict[tuple[str, float], dict] = {}
    records: list[Record] = []
    for seconds in lengths:
        group = [name for name in MODELS if name != "faceformer"]
        for r in _run_case(",".join(group), seconds, budget) + _run_case("faceformer", seconds, budget):
            name = r["model"]
            results[(name, seconds)] = r
            tag = f"{seconds:g}s"
            unit = "x real time (extrapolated)" if r["extrapolated"] else "x real time"
            params = {"audio_s": seconds, "frames": r["frames"], "threads": r["threads"], "rounds": r["rounds"]}
            if r["extrapolated"]:
                params.update(extrapolated=True, budget_s=budget)
            records.append(Record(f"rtf/{name}/total/{tag}", r["total_s"] / seconds, unit, params=params))
            records.append(Record(f"rtf/{name}/decoder/{tag}", r["decoder_s"] / seconds, unit, params=params))
            if name == "jambatalk":
                records.append(Record(f"rtf/encoder/{tag}", r["encoder_s"] / seconds, "x real time", params=params))
                if "encoder_stock_s" in r:  # the time-major conv feature encoder against transformers' forward
                    records.append(Record(f"rtf/encoder_vs_transformers_forward/{tag}", r["encoder_s"] / seconds,
                                          "x real time", baseline="transformers", params=params,
                                          baseline_value=r["encoder_stock_s"] / seconds))
        jt = results.get(("jambatalk", seconds))
        for base in BASELINES:
            b = results.get((base, seconds))
            if jt is None or b is None:
                continue
            for part in ("total", "decoder"):
                params = {"audio_s": seconds, "ratio": "jambatalk time / baseline time",
                          **round_ratios(jt, b, part)}
                if b["extrapolated"]:
                    params["extrapolated"] = True
                records.append(Record(f"rtf/jambatalk_vs_{base}/{part}/{seconds:g}s", jt[f"{part}_s"] / seconds,
                                      "x real time", baseline=base, baseline_value=b[f"{part}_s"] / seconds,
                                      params=params))
    longest = lengths[-1]
    for name in MODELS:
        a, b = results.get((name, 10.0)), results.get((name, longest))
        if a is None or b is None:
            continue
        growth = (b["total_s"] / longest) / (a["total_s"] / 10.0)
        params = {"from_s": 10.0, "to_s": longest, "linear": 1.0}
        if b["extrapolated"]:
            params["extrapolated"] = True
        records.append(Record(f"rtf/{name}/growth_{longest:g}s_vs_10s", growth, "x", params=params))
    return records
