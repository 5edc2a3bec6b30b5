"""Qualify the built-in default model (or any synthetic-corpus checkpoint).

    python tools/eval_default.py --data data/synthetic [--checkpoint runs/default/best] \
        [--real DIR] [--silence-gate on|off] [--json results.json]

1. Held-out corpus sentences (the test split: unseen text; half spoken by a voice never heard in
   training): LVE, MVE and FDD of the model and of the static template (a mouth that never moves).
2. Lip reading: phoneme error rate of the lip reader's greedy CTC decoding from the predicted lips,
   against chance (random phonemes drawn with the training frequencies, the true length) and against
   the same reader given still lips (what it outputs from its priors alone).
3. Real human speech (every .wav in --real): Pearson r between mouth opening and the speech energy
   envelope, and the mouth opening during silences longer than 0.3 s.

Motion comes from ``model.predict`` and ``Stream.offline`` with the model's silence-gate setting, or
as ``--silence-gate`` says (off: the network's raw output). The lip reader reads the raw lips.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from jambatalk.api import load_model
from jambatalk.audio import load_audio
from jambatalk.data import SequenceDataset, get_spec
from jambatalk.fileio import atomic_path, check_output_path
from jambatalk.losses import collapse_ctc, phoneme_targets
from jambatalk.metrics import SequenceMetrics
from jambatalk.synth import default_head, lip_gap
from jambatalk.synth.checks import edit_distance, speech_mouth_checks


def heldout_metrics(model, root: Path, gate=None) -> dict:
    spec = get_spec("synthetic")
    ds = SequenceDataset(spec, root, "test", cache_audio=False)
    lip, upper = spec.lip_indices(root), spec.upper_indices(root)
    heldout = set(json.loads((root / "meta.json").read_text()).get("heldout_speakers", []))
    accs = {k: (SequenceMetrics(lip, upper), SequenceMetrics(lip, upper)) for k in ("all", "heldout_voice")}
    streams = model.streamable
    if streams:
        accs["streamed"] = (SequenceMetrics(lip, upper), SequenceMetrics(lip, upper))
    tokens = model.cfg.lip_reader.tokens
    train_counts = Counter()
    for item in SequenceDataset(spec, root, "train", cache_audio=False):
        train_counts.update(p[0] for p in item["phonemes"] or [] if p[0] in tokens)
    vocab = sorted(train_counts)
    probs = np.array([train_counts[t] for t in vocab], np.float64)
    probs /= probs.sum()
    rng = np.random.default_rng(0)
    errors = chance_errors = still_errors = total = 0
    for item in ds:
        gt = item["vertices"]
        pred = model.predict(item["audio"], item["template"], n_frames=len(gt), silence_gate=gate)
        static = np.broadcast_to(item["template"], gt.shape)
        groups = ["all"] + (["heldout_voice"] if item["subject"] in heldout else [])
        for g in groups:
            accs[g][0].update(item["name"], pred, gt, item["template"])
            accs[g][1].update(item["name"], static, gt, item["template"])
        if streams:  # what jambatalk.Stream (lookahead 0.3 s) outputs for the same audio
            from jambatalk.stream import Stream

            streamed = Stream(model, item["template"], lookahead=0.3, silence_gate=gate).offline(
                item["audio"])[: len(gt)]
            accs["streamed"][0].update(item["name"], streamed, gt[: len(streamed)], item["template"])
            accs["streamed"][1].update(item["name"], static[: len(streamed)], gt[: len(streamed)], item["template"])
        if model.lip_reader is not None and item["phonemes"]:
            with torch.no_grad():
                out = model(torch.as_tensor(item["audio"])[None], torch.as_tensor(item["template"]),
                            n_frames=len(gt), lip_reading=True)
            hyp = collapse_ctc(out.lip_log_probs[0].argmax(-1))
            ref = phoneme_targets([item["phonemes"]], tokens)[0]
            errors += edit_distance(hyp, ref)
            total += len(ref)
            with torch.no_grad():  # control: the same reader given still lips (what it says from priors alone)
                still = torch.zeros_like(out.offsets[:, :, model.lip_index])
                _, lp = model.lip_reader(still, out.audio_hidden.shape[1], None)
            still_errors += edit_distance(collapse_ctc(lp[0].argmax(-1)), ref)
            for _ in range(5):
                guess = [tokens.index(t) + 1 for t in rng.choice(vocab, size=len(ref), p=probs)]
                chance_errors += edit_distance(guess, ref) / 5
    result = {}
    for g, (m, s) in accs.items():
        mo, so = m.compute()["overall"], s.compute()["overall"]
        result[g] = {"model": mo, "static": so, "lve_ratio": mo["lve"] / so["lve"]}
    if total:
        result["lip_reading"] = {"per": errors / total, "chance_per": chance_errors / total,
                                 "still_lips_per": still_errors / total, "phonemes": total}
    return result


def real_speech(model, folder: Path, gate=None) -> dict:
    head = default_head()
    out = {}
    for wav in sorted(folder.glob("*.wav")):
        audio = load_audio(wav)
        verts = model.predict(audio, silence_gate=gate)
        out[wav.name] = speech_mouth_checks(lip_gap(head, verts), audio, model.fps)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the synthetic corpus (jambatalk synth --dst ...)")
    parser.add_argument("--checkpoint", default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--real", default=None, help="folder of real speech .wav files")
    parser.add_argument("--silence-gate", choices=("on", "off"), default=None,
                        help="close the mouth in pauses (default: the model's setting)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.json:  # before the evaluation, which takes minutes
        check_output_path(args.json, file=True, suffix=".json")
    if args.real is not None:  # checked before the held-out evaluation, which takes minutes
        real = Path(args.real)
        if not real.is_dir():
            parser.error(f"--real {real}: no such folder (pass a folder of speech recordings, .wav)")
        if not any(real.glob("*.wav")):
            parser.error(f"--real {real}: the folder holds no .wav files (pass a folder of speech recordings)")
    torch.set_flush_denormal(True)
    model = load_model(args.checkpoint)
    gate = None if args.silence_gate is None else args.silence_gate == "on"
    print(f"silence gate: {'on' if model.gates_silence(gate) else 'off'}")
    res = {"silence_gate": model.gates_silence(gate), "heldout": heldout_metrics(model, Path(args.data), gate)}
    for g in ("all", "heldout_voice", "streamed"):
        if g not in res["heldout"]:
            continue
        r = res["heldout"][g]
        print(f"{g:>14}: LVE {r['model']['lve']:.3e} vs static {r['static']['lve']:.3e} (ratio {r['lve_ratio']:.3f}); "
              f"MVE {r['model']['mve']:.3e} vs {r['static']['mve']:.3e}; "
              f"FDD {r['model']['fdd']:.3e} vs {r['static']['fdd']:.3e}; {r['model']['n_sequences']} sequences")
    if "lip_reading" in res["heldout"]:
        lr = res["heldout"]["lip_reading"]
        print(f"   lip reading: PER {lr['per']:.3f} vs chance {lr['chance_per']:.3f} and {lr['still_lips_per']:.3f} from "
              f"still lips, over {lr['phonemes']} phonemes")
    if args.real:
        res["real"] = real_speech(model, Path(args.real), gate)
        for name, r in res["real"].items():
            opening = r["silence_opening_rel"]  # NaN without silent frames: nothing to measure
            print(f"{name:>32}: r = {r['r']:.3f}; mouth opening in silence "
                  f"{'n/a' if opening != opening else f'{opening:.3f} of speech'} ({r['silent_frames']} silent frames)")
    if args.json:  # strict JSON: a figure with nothing to measure (no silence in a recording) is null, not NaN
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(_finite_or_null(res), indent=2, allow_nan=False))
    return 0


def _finite_or_null(value):
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    from jambatalk.errors import script_exit

    sys.exit(script_exit("eval_default", main))
