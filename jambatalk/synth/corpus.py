"""The built-in speech-to-face corpus, written in the processed VOCASET layout.

Layout of ``dst``::

    vertices_npy/<subject>_sentNNN.npy   (T, 3V) float32 at 30 fps
    wav/<subject>_sentNNN.wav            16 kHz mono 16-bit PCM
    labels/<subject>_sentNNN.json        {"text", "phonemes": [[symbol, start_s, end_s], ...], ...}
    templates.pkl                        subject -> (V, 3) float32
    template.ply                         the head (faces)
    regions.json                         head regions (name -> vertex indices)
    splits.json                          {"train": [...], "val": [...], "test": [...]}
    meta.json                            {"dataset": "synthetic", "fps": 30, "tokens": [...], ...}

Every sentence appears once. Validation and test sentences are unseen in training; one held-out
voice variant speaks only in the test split. Files are written atomically, finished sequences
are skipped on a rerun (empty or damaged ones are made again), a folder holding a corpus made with
other parameters is refused, and the same seed gives identical files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, resample
from ..errors import InputError
from ..fileio import atomic_path, check_output_folder
from ..pickles import REFUSED_FIX, RefusedPickle, load_data
from .augment import augment, random_augmentation
from .espeak import synthesize
from .head import Head, default_head
from .motion import deform, frame_params, n_frames_for
from .speakers import HELDOUT_SPEAKERS, SPEAKERS, TRAIN_SPEAKERS, Speaker
from .text import generate_sentences

__all__ = ["generate_corpus", "plan_corpus", "estimated_bytes", "make_sequence", "insert_silences", "random_silences", "cli_synth", "load_template_head", "FPS"]

FPS = 30
_HEAD: dict = {}


def load_template_head(template) -> Head:
    """``None`` -> the procedural head; a :class:`Head`; or ``"mesh.ply[:regions.pkl|.json]"``.

    Without an explicit regions file, ``FLAME_masks.pkl`` or ``regions.json`` beside the mesh is used.
    """
    if template is None:
        return default_head()
    if isinstance(template, Head):
        return template
    from ..mesh import load_mesh

    text = str(template)
    mesh_path, regions_path = text, None
    for sep_ext in (".pkl", ".json"):
        if text.endswith(sep_ext) and ":" in text:
            mesh_path, regions_path = text.rsplit(":", 1)
    mesh_path = Path(mesh_path)
    if not mesh_path.is_file():
        raise InputError(f"template mesh '{mesh_path}' "
                         + ("is a folder" if mesh_path.is_dir() else "does not exist"), "pass a .ply or .obj file")
    if regions_path is None:
        for cand in ("FLAME_masks.pkl", "regions.json"):
            if (mesh_path.parent / cand).is_file():
                regions_path = mesh_path.parent / cand
                break
    if regions_path is None:
        raise InputError(f"template '{mesh_path}' has no regions file",
                         "pass --template MESH:REGIONS with a .pkl or .json dict of region -> vertex indices")
    vertices, faces = load_mesh(mesh_path)
    if len(faces) == 0:
        raise InputError(f"template '{mesh_path}' has vertices but no faces", "pass a triangle mesh (.ply/.obj)")
    regions_path = Path(regions_path)
    if not regions_path.is_file():
        raise InputError(f"regions file '{regions_path}' does not exist", "check the path")
    try:
        if regions_path.suffix == ".json":
            regions = json.loads(regions_path.read_text())
        else:
            with open(regions_path, "rb") as f:
                regions = load_data(f)
    except RefusedPickle as exc:
        raise InputError(f"regions file '{regions_path}' was not read: {exc}", REFUSED_FIX) from None
    except Exception as exc:  # noqa: BLE001 - JSON, unpickling or decoding errors of a damaged file
        raise InputError(f"regions file '{regions_path}' could not be read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else 'damaged'})",
                         "pass a .json or .pkl dict of region name -> vertex indices") from None
    if not isinstance(regions, dict):
        raise InputError(f"regions file '{regions_path}' holds {type(regions).__name__}, not a dict",
                         "pass a .json or .pkl dict of region name -> vertex indices")
    return Head.from_template(vertices, faces, regions)


def _speaker_template(head: Head, speaker: Speaker) -> np.ndarray:
    return (np.asarray(head.vertices, dtype=np.float64) * np.asarray(speaker.shape)).astype(np.float32)


def plan_corpus(n_sentences: int, seed: int = 0) -> list[dict]:
    """Which sentence, speaker, split and seeds every sequence gets (deterministic for a seed)."""
    if n_sentences < 3:
        raise InputError(f"a corpus needs at least 3 sentences (train, val, test); got {n_sentences}",
                         "pass --sentences 3 or more")
    if seed < 0:
        raise InputError(f"the seed is {seed}", "pass --seed 0 or more")
    sentences = generate_sentences(n_sentences, seed)
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(n_sentences)
    n_test = max(1, int(round(0.1 * n_sentences)))
    n_val = max(1, int(round(0.1 * n_sentences)))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[int(i)] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    items, k_train, k_test = [], 0, 0
    for i, text in enumerate(sentences):
        split = split_of[i]
        if split == "test":
            heldout = k_test % 2 == 0
            pool = HELDOUT_SPEAKERS if heldout else TRAIN_SPEAKERS
            speaker = pool[(k_test // 2) % len(pool)]
            k_test += 1
        else:
            speaker = TRAIN_SPEAKERS[k_train % len(TRAIN_SPEAKERS)]
            k_train += 1
        item_rng = np.random.default_rng([seed, i, 0xA0D])
        items.append({
            "name": f"{speaker.name}_sent{i:03d}", "index": i, "text": text, "speaker": speaker.name, "split": split,
            "voice_seed": int(item_rng.integers(2**31)), "face_seed": int(item_rng.integers(2**31)),
            "augment": random_augmentation(item_rng) if split != "test" else None,
            "silence": random_silences(item_rng),
        })
    return items


def random_silences(rng: np.random.Generator) -> dict:
    """Silence to add around and inside an utterance (seconds), so that models see pauses longer than
    the few milliseconds espeak-ng leaves at the edges and the ~0.2 s it leaves at commas: a lead, a
    tail, and for each inner pause an extra length (0 for about half of them)."""
    return {"lead": float(rng.uniform(0.05, 0.8)), "tail": float(rng.uniform(0.05, 0.8)),
            "inner": [float(x) if rng.random() < 0.5 else 0.0 for x in rng.uniform(0.1, 0.6, 8)]}


def insert_silences(audio: np.ndarray, sample_rate: int, phonemes: list, spec: dict) -> tuple[np.ndarray, list]:
    """Add digital silence at the start, the end and inside the inner pauses ("_") of an utterance;
    phoneme timings move with the audio and the pauses grow by the silence added to them."""
    inner = list(spec.get("inner", []))
    lead = int(round(spec.get("lead", 0.0) * sample_rate))
    pieces, out_ph, cursor, shift = [np.zeros(lead, dtype=np.float32)], [], 0, lead / sample_rate
    if lead:
        out_ph.append(["_", 0.0, shift])
    for k, (sym, start, end) in enumerate(phonemes):
        extra = 0
        if sym == "_" and 0 < k < len(phonemes) - 1 and inner:
            extra = int(round(inner.pop(0) * sample_rate))
        if extra:
            mid = int(round((start + end) / 2 * sample_rate))
            pieces.append(audio[cursor:mid])
            pieces.append(np.zeros(extra, dtype=np.float32))
            cursor = mid
        out_ph.append([sym, start + shift, end + shift + extra / sample_rate])
        shift += extra / sample_rate
    pieces.append(audio[cursor:])
    tail = int(round(spec.get("tail", 0.0) * sample_rate))
    pieces.append(np.zeros(tail, dtype=np.float32))
    out = np.concatenate(pieces).astype(np.float32)
    if tail:
        end = out_ph[-1][2] if out_ph else 0.0
        out_ph.append(["_", end, len(out) / sample_rate])
    merged = []
    for ph in out_ph:  # neighbouring pauses become one
        if merged and ph[0] == "_" and merged[-1][0] == "_":
            merged[-1][2] = ph[2]
        else:
            merged.append(list(ph))
    merged[-1][2] = len(out) / sample_rate
    return out, [[p[0], round(p[1], 6), round(p[2], 6)] for p in merged]


def make_sequence(item: dict, head: Head, fps: int = FPS) -> tuple[np.ndarray, np.ndarray, dict]:
    """Synthesise one planned sequence: ((T, V, 3) vertices, 16 kHz audio, label dict)."""
    speaker = SPEAKERS[item["speaker"]]
    utt = synthesize(item["text"], speaker.voice, speaker.rate, speaker.pitch, speaker.pitch_range,
                     seed=item["voice_seed"])
    audio = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    phonemes = utt.phonemes
    if item.get("silence"):
        audio, phonemes = insert_silences(audio, SAMPLE_RATE, phonemes, item["silence"])
    duration = len(audio) / SAMPLE_RATE
    n = n_frames_for(duration, fps)
    params = frame_params(phonemes, n, fps, speaker.style, item["face_seed"])
    vertices = deform(head, params, speaker.style, _speaker_template(head, speaker))
    if item.get("augment"):
        audio = augment(audio, SAMPLE_RATE, item["augment"])
    label = {
        "text": item["text"], "phonemes": phonemes, "speaker": speaker.name, "voice": speaker.voice,
        "split": item["split"], "augment": item.get("augment"), "fps": fps, "n_frames": int(n),
        "duration": round(duration, 6),
    }
    return vertices, audio, label


def _paths(dst: Path, name: str) -> tuple[Path, Path, Path]:
    return dst / "vertices_npy" / f"{name}.npy", dst / "wav" / f"{name}.wav", dst / "labels" / f"{name}.json"


def _read_json(path: Path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _finished(dst: Path, item: dict, n_vertices: int) -> bool:
    """Whether an earlier run wrote this sequence whole: a label for this sentence, a non-empty vertex array of the
    frames it lists and a non-empty 16 kHz recording (an empty or damaged file is written again)."""
    import soundfile as sf

    npy, wav, lab = _paths(dst, item["name"])
    label = _read_json(lab)
    if not isinstance(label, dict) or label.get("text") != item["text"]:
        return False
    try:
        vertices = np.load(npy, mmap_mode="r", allow_pickle=False)
        info = sf.info(str(wav))
    except Exception:  # noqa: BLE001 - missing, empty or damaged files: the sequence is made again
        return False
    return (vertices.ndim == 2 and vertices.shape == (label.get("n_frames"), 3 * n_vertices) and len(vertices) > 0
            and info.frames > 0 and info.samplerate == SAMPLE_RATE)


def _check_same_corpus(dst: Path, items: list[dict], params: dict) -> None:
    """Refuse a ``dst`` that holds a corpus made with other parameters: its meta.json (a finished corpus), its
    splits.json (written first) and its labels (each names its sentence) must agree with this run's plan."""
    meta = _read_json(dst / "meta.json")
    splits = _read_json(dst / "splits.json")
    planned = {s: [it["name"] for it in items if it["split"] == s] for s in ("train", "val", "test")}
    other = None
    if isinstance(meta, dict):
        keys = [k for k in ("n_sentences", "seed", "n_vertices", "template") if k in meta]
        # a template file may be named by another path: only the built-in head against another mesh counts
        same = {k: meta[k] == params[k] for k in keys}
        if "template" in same:
            same["template"] = (meta["template"] == "procedural") == (params["template"] == "procedural")
        if not all(same.values()):
            other = "its meta.json says " + ", ".join(f"{k} {meta[k]!r}" for k in keys)
    if meta is None and splits is None:  # a synth run writes splits.json first: this is another dataset's folder
        planned_names = {it["name"] for it in items}
        found = (["templates.pkl"] if (dst / "templates.pkl").exists() else []) + sorted(
            f"{sub}/{f.name}" for sub in ("vertices_npy", "wav") if (dst / sub).is_dir()
            for f in (dst / sub).iterdir() if f.stem not in planned_names)[:3]
        if found:
            raise InputError(f"'{dst}' holds a dataset that is not a synthetic corpus ({', '.join(found)} without "
                             "meta.json or splits.json): synth would replace its templates.pkl and mix its sequences "
                             "in", "choose a new --dst folder for the corpus")
    if other is None and isinstance(splits, dict) and splits != planned:
        other = "its splits.json lists other sequences"
    if other is None:
        for it in items:
            label = _read_json(_paths(dst, it["name"])[2])
            if isinstance(label, dict) and "text" in label and label["text"] != it["text"]:
                other = f"its label {it['name']}.json is for another sentence ({label['text']!r})"
                break
    if other is not None:
        raise InputError(f"'{dst}' holds a synthetic corpus made with other parameters than this run's (n_sentences "
                         f"{params['n_sentences']}, seed {params['seed']}, template {params['template']!r}): {other}; "
                         "writing into it would mix the two",
                         "choose a new --dst folder, or run with that corpus's --sentences, --seed and --template")


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))


def _work(args) -> str:
    item, dst = args
    import soundfile as sf

    head = _HEAD["head"]
    npy, wav, lab = _paths(Path(dst), item["name"])
    vertices, audio, label = make_sequence(item, head)
    with atomic_path(npy) as tmp:
        np.save(tmp, vertices.reshape(len(vertices), -1))
    with atomic_path(wav) as tmp:
        sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    _write_json(lab, label)  # written last: its presence marks the sequence finished
    return item["name"]


def _init_worker(head: Head) -> None:
    _HEAD["head"] = head


def estimated_bytes(items: list[dict], n_vertices: int) -> int:
    """About how many bytes the sequences ``items`` take on disk: their vertices (float32 at :data:`FPS`) and 16-bit
    audio, for a length of 1.3 s + 0.05 s per character of text (the fit over the default corpus: 3.3 s mean)."""
    per_second = FPS * n_vertices * 3 * 4 + SAMPLE_RATE * 2
    return sum(int((1.3 + 0.05 * len(it["text"])) * per_second) + 8192 for it in items)  # + the labels' JSON


def _check_space(dst: Path, todo: list[dict], n_vertices: int) -> None:
    """Refuse, before anything is written, a corpus that the disk holding ``dst`` has no room for."""
    need = estimated_bytes(todo, n_vertices)
    existing = next(p for p in (dst, *dst.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        each = need / max(1, len(todo))
        raise InputError(f"the corpus needs about {need / 1e9:.1f} GB in '{dst}' ({len(todo)} sequences of about "
                         f"{each / 1e6:.1f} MB) but {free / 1e9:.1f} GB is free there",
                         "pass fewer --sentences, or a --dst on a disk with more room")


def generate_corpus(dst, n_sentences: int = 300, seed: int = 0, template=None, workers: int | None = None,
                    progress: bool = True) -> Path:
    """Write the synthetic corpus to ``dst`` (see the module docstring for the layout); returns ``dst``.

    Args:
        dst: output folder (created; finished sequences already there are kept; one that holds a corpus of
            other parameters is refused).
        n_sentences: number of sequences (one sentence each).
        seed: everything (text, split, speakers, audio, blinks, augmentation) follows from it.
        template: ``None`` for the procedural head, a :class:`Head`, or ``"mesh.ply[:regions]"``.
        workers: parallel processes (default: CPU count).
        progress: print progress to stderr.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers is {workers!r}", "pass a number of processes of 1 or more (or none: one per CPU)")
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"'{dst}' exists and is not a folder", "choose another --dst")
    blocked = next((p for p in dst.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise InputError(f"cannot create '{dst}': '{blocked}' is a file, not a folder", "choose another --dst")
    check_output_folder(dst)
    head = load_template_head(template)
    items = plan_corpus(int(n_sentences), int(seed))
    template_name = "procedural" if template is None else str(template) if not isinstance(template, Head) else "custom"
    if dst.is_dir():
        _check_same_corpus(dst, items, {"n_sentences": len(items), "seed": int(seed), "n_vertices": head.n_vertices,
                                        "template": template_name})
    todo = [it for it in items if not _finished(dst, it, head.n_vertices)]
    _check_space(dst, todo, head.n_vertices)
    for sub in ("vertices_npy", "wav", "labels"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    speakers = sorted({it["speaker"] for it in items})
    with atomic_path(dst / "templates.pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump({s: _speaker_template(head, SPEAKERS[s]) for s in speakers}, f, protocol=4)
    from ..mesh import save_mesh

    with atomic_path(dst / "template.ply") as tmp:
        save_mesh(tmp, head.vertices, head.faces)
    _write_json(dst / "regions.json", {k: v.tolist() for k, v in sorted(head.regions.items())})
    _write_json(dst / "splits.json", {s: [it["name"] for it in items if it["split"] == s]
                                      for s in ("train", "val", "test")})
    workers = max(1, int(workers or os.cpu_count() or 1))
    start = time.perf_counter()
    done = len(items) - len(todo)
    step = max(1, len(items) // 20)

    def report(name):
        nonlocal done
        done += 1
        if progress and (done % step == 0 or done == len(items)):
            print(f"synth: {done}/{len(items)} sequences ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    jobs = [(it, str(dst)) for it in todo]
    if workers == 1 or len(todo) <= 1:
        _init_worker(head)
        for job in jobs:
            report(_work(job))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(head,)) as pool:
            for name in pool.imap_unordered(_work, jobs, chunksize=1):
                report(name)
    tokens = set()
    for it in items:
        tokens.update(p[0] for p in json.loads(_paths(dst, it["name"])[2].read_text())["phonemes"])
    _write_json(dst / "meta.json", {
        "dataset": "synthetic", "fps": FPS, "sample_rate": SAMPLE_RATE, "tokens": sorted(tokens),
        "n_vertices": head.n_vertices, "n_sentences": len(items), "seed": int(seed),
        "template": template_name,
        "speakers": {s: {"voice": SPEAKERS[s].voice, "rate": SPEAKERS[s].rate, "pitch": SPEAKERS[s].pitch,
                         "heldout": s in {h.name for h in HELDOUT_SPEAKERS}} for s in speakers},
        "train_speakers": [s.name for s in TRAIN_SPEAKERS], "heldout_speakers": [s.name for s in HELDOUT_SPEAKERS],
        "generator": "jambatalk.synth",
    })
    if progress:
        print(f"synth: wrote {len(todo)} new sequences to {dst} in {time.perf_counter() - start:.1f} s "
              f"({len(items)} in all)", file=sys.stderr)
    return dst


def cli_synth(args) -> int:
    """``jambatalk synth --dst DIR [--sentences N] [--seed S] [--template T] [--workers W]``."""
    dst = generate_corpus(args.dst, n_sentences=args.sentences, seed=args.seed, template=args.template,
                          workers=args.workers, progress=True)
    print(dst)
    return 0
