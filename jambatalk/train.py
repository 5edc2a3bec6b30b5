"""The trainer: ``jambatalk train --config FILE [--out DIR] [--resume] [key=value ...]``.

One code path for one CPU, one GPU and many GPUs / nodes: under ``torchrun`` the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU) and each rank reads its own shard of every epoch.
Checkpoints are folders written atomically: ``last/`` after every epoch (and at the end), ``best/``
on the best validation loss. Each holds config.json + model.safetensors (a model folder that
``load_model`` reads), ``trainer_state.pt`` (optimizer, schedule, step, RNG states) and
``experiment.yaml``; ``--resume`` continues exactly where ``last/`` stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import shutil
from pathlib import Path

import numpy as np
import torch

from .config import ExperimentConfig, load_experiment, to_dict
from .errors import CheckpointError, ConfigError, DatasetError, InputError, TrainingError
from .fileio import check_output_folder

__all__ = ["Trainer", "train", "cli_train", "complete_model_config", "open_dataset_root"]


# ----------------------------------------------------------------------------- set-up helpers


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: streams of derived seeds: an item's crop and augmentation, and a step's dropout (the model's random draws)
_ITEM_STREAM, _STEP_STREAM = 0, 1


def _derived_seed(*parts: int) -> int:
    """A 63-bit seed of its non-negative integer parts, statistically independent of any other parts' seed:
    a training item's crop, or a rank's dropout in one step, is a function of the run's seed and where it
    falls, not of what ran before (any number of loader workers, ranks, or a resumed run draws the same)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]) >> 1


def _rng_state() -> dict:
    """The RNG states, in types that ``torch.load(weights_only=True)`` reads (NumPy's key as a tensor)."""
    name, key, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(key.astype(np.int64)), *rest),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # this process's GPU only: a run may resume
        state["cuda"] = torch.cuda.get_rng_state()                  # with another number of GPUs
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]  # key: a tensor, or a NumPy array in states written before
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # every GPU's, as states were written before
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _read_trainer_state(path: Path):
    """``torch.load`` of a trainer state without running code from the file: tensors, numbers, strings and
    containers, and (in states written before the NumPy RNG key was kept as a tensor) NumPy arrays."""
    import pickle

    try:
        from numpy._core.multiarray import _reconstruct  # NumPy 2
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        if safe is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        with safe(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise
        try:
            known = {f"{o.__module__}.{o.__name__}" for o in allowed}
            named = ", ".join(g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in known)
        except Exception:  # noqa: BLE001 - torch < 2.5, or a file it cannot list
            named = ""
        raise CheckpointError(f"cannot resume: '{path}' was not read: it calls Python code{f' ({named})' if named else ''}"
                              ", which a trainer state written by jambatalk train does not, and reading it would run "
                              "that code", "resume only runs you made yourself; start a new run without --resume, "
                              "or from its weights alone with train.init_from=...") from None


def _check_out_dir(out: Path) -> None:
    """Refuse a run folder that is a file, or lies below one, before anything runs."""
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        where = "is a file" if blocked == out else f"lies inside '{blocked}', which is a file"
        raise InputError(f"run folder (--out) '{out}' {where}", "pass --out a folder (new, or an earlier run's "
                         "with --resume)")
    check_output_folder(out)


def _resolve_device(name: str, local_rank: int, distributed: bool = False) -> torch.device:
    """train.device as a torch device; a CUDA or MPS device that this machine does not have is a ConfigError, and
    so is one GPU named for every process of a distributed run."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if distributed and device.type == "cuda" and name != "cuda":
        raise ConfigError(f"train.device is '{name}' in a distributed run: every process would take that one GPU "
                          "(NCCL: 'Duplicate GPU detected')", "use train.device=cuda or auto: each process takes "
                          "the GPU of its LOCAL_RANK (CUDA_VISIBLE_DEVICES picks which GPUs)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index >= count:
            raise ConfigError(f"train.device is '{name}' but this machine has "
                              + (f"{count} CUDA devices (0 .. {count - 1})" if count else "no CUDA device"),
                              "use train.device=auto (a GPU when there is one, else the CPU) or train.device=cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is 'mps' but this machine has no MPS device",
                          "use train.device=auto or train.device=cpu")
    return device


def open_dataset_root(cfg: ExperimentConfig, generate: bool = True) -> Path:
    """The processed dataset folder; the synthetic corpus is generated there when asked (``data.generate``) and
    missing, unless ``generate`` is False (evaluation reads data, it does not make it)."""
    data = cfg.data
    if not data.root:
        raise ConfigError("data.root is not set", "set data.root to the processed dataset folder (key=value override)")
    root = Path(data.root).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data.root '{root}' is a file, not a dataset folder",
                           "set data.root to the processed dataset's folder (the one holding vertices_npy/)")
    if not (root / "vertices_npy").is_dir():
        synthetic = data.dataset == "synthetic"
        if data.generate and synthetic and generate:
            from .synth.corpus import generate_corpus

            kwargs = {"n_sentences": data.n_sentences} if data.n_sentences else {}
            generate_corpus(root, **kwargs)
        else:
            from .data import get_spec

            spec = get_spec(data.dataset)
            if synthetic:
                sentences = f" --sentences {data.n_sentences}" if data.n_sentences else ""
                fix = f"generate it with jambatalk synth --dst {root}{sentences}" + (
                    ", or set data.generate=true" if generate else
                    ", or set data.root to the corpus the model was trained on (evaluation does not generate one)")
            elif spec.preprocessor:
                fix = f"run jambatalk preprocess {spec.name} --src RAW --dst {root} first (see {spec.readme})"
            else:
                fix = f"make it as {spec.readme} describes, or set data.root to the folder that holds it"
            if data.generate and not synthetic:
                fix += " (data.generate=true builds only the synthetic corpus)"
            raise DatasetError(f"'{root}' holds no processed dataset (no vertices_npy/ folder)", fix)
    return root


def _meta_tokens(meta: Path) -> list[str]:
    """The phoneme tokens that a dataset's meta.json lists ([] when it lists none)."""
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"'{meta}' is not readable JSON ({type(exc).__name__}: {exc})",
                           "regenerate the dataset's meta.json (jambatalk synth writes it for the synthetic corpus), "
                           "or remove it and give model.lip_reader.tokens") from None
    tokens = data.get("tokens", []) if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DatasetError(f"'{meta}' is not a dict whose 'tokens' is a list of phoneme strings",
                           "regenerate the dataset's meta.json (jambatalk synth writes it for the synthetic corpus), "
                           "or remove it and give model.lip_reader.tokens")
    return tokens


def complete_model_config(cfg: ExperimentConfig, spec, root: Path, asr_vocab: int = 0) -> None:
    """Fill the model facts that come from the dataset: vertex count, fps, lip mask, token set; and
    ``model.phoneme_head``, which follows ``loss.audio_phonemes > 0``.

    Dataset facts win over whatever the model section says (a preset's placeholders included).
    """
    m = cfg.model
    m.n_vertices = spec.vertex_count_at(root)
    m.fps = float(spec.fps)
    m.dataset = spec.name
    m.phoneme_head = cfg.loss.audio_phonemes > 0
    m.subjects = list(spec.train_subjects(root))[: m.n_subjects] if m.n_subjects else []
    # the dataset's lip mask, whoever uses it (the lip reader, loss.lip_vertex): a preset's placeholder indices
    # were kept where the lip reader was off, and loss.lip_vertex trained other vertices than the lips
    try:
        m.lip_indices = [int(i) for i in spec.lip_indices(root)]
    except DatasetError:
        if m.lip_reader.enabled or cfg.loss.lip_vertex > 0:
            raise
        m.lip_indices = []
    if m.lip_reader.enabled or m.phoneme_head:
        if cfg.loss.lip_targets == "asr":
            m.lip_reader.tokens = [f"<{i}>" for i in range(1, asr_vocab)]  # the teacher's ids; 0 is its blank
        else:
            meta = root / "meta.json"
            tokens = _meta_tokens(meta) if meta.is_file() else []
            if tokens:
                m.lip_reader.tokens = list(tokens)
            elif not m.lip_reader.tokens:
                raise ConfigError("loss.lip_targets is 'phonemes' (or loss.audio_phonemes > 0) but the dataset "
                                  f"lists no phoneme tokens ({meta} is missing or empty)",
                                  "give model.lip_reader.tokens, use loss.lip_targets=asr with "
                                  "loss.audio_phonemes=0, or disable the lip reader")
            _check_tokens_cover_labels(m.lip_reader.tokens, root)
    m.__post_init__()


def _differences(key: str, old, new):
    """(dotted key, old, new) for each leaf of two config dicts that differs (a key one of them lacks included)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            yield from _differences(f"{key}.{k}", old.get(k), new.get(k))
    elif old != new:
        yield key, old, new


def _check_tokens_cover_labels(tokens: list, root: Path) -> None:
    """A ConfigError when the dataset's labels (labels/*.json) use phonemes that ``tokens`` does not list: they
    were left out of the lip reader's and the phoneme head's targets without a word (a preset's placeholder
    tokens left out every one)."""
    from .data.dataset import load_labels

    known, unknown = set(tokens), set()
    for path in sorted((root / "labels").glob("*.json")) if (root / "labels").is_dir() else []:
        unknown.update(p[0] for p in load_labels(path)["phonemes"] if p[0] not in known)
    if unknown and "<unk>" not in known:
        shown = sorted(unknown)
        raise ConfigError(f"the labels in '{root / 'labels'}' use {len(shown)} phonemes that model.lip_reader.tokens "
                          f"does not list ({', '.join(shown[:10])}{', ...' if len(shown) > 10 else ''}; it lists "
                          f"{len(tokens)}): the lip reader would learn nothing from them",
                          "list the dataset's phonemes in its meta.json 'tokens' (jambatalk synth writes them) or in "
                          "model.lip_reader.tokens")


# ----------------------------------------------------------------------------- trainer


class _BatchReads(torch.utils.data.Dataset):
    """The train split read a whole batch of (item index, item seed) per index, in loader workers: the batch
    collated, or the JambaTalkError a read raised, handed back whole (the loader would re-raise it with a
    traceback for its message, and without its fix)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, batch: list):
        from .data import collate
        from .errors import JambaTalkError

        try:
            return collate([self.dataset[x] for x in batch])
        except JambaTalkError as exc:
            return exc


class _WorkerLoader:
    """``train.num_workers`` processes that read and collate the train split's batches ahead of the steps. They
    live until the trainer's run ends (each keeps its audio cache between epochs); each epoch hands them its
    batches."""

    def __init__(self, dataset, num_workers: int, pin_memory: bool):
        self.batches: list = []  # the loader's sampler: the current epoch's batches, refilled in place
        self.loader = torch.utils.data.DataLoader(
            _BatchReads(dataset), batch_size=None, sampler=self.batches, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=True)

    def epoch(self, batches: list):
        from .errors import JambaTalkError

        self.batches[:] = batches
        for batch in self.loader:
            if isinstance(batch, JambaTalkError):
                raise batch
            yield batch


class Trainer:
    def __init__(self, cfg: ExperimentConfig, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True):
        from .data import SequenceDataset, get_spec

        self.cfg, self.out = cfg, Path(out_dir)
        _check_out_dir(self.out)
        self.rank, self.local_rank, self.world = _dist_info()
        self.distributed = self.world > 1
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = _resolve_device(tc.device, self.local_rank, self.distributed)
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.progress = progress and self.rank == 0

        self.spec = get_spec(cfg.data.dataset)
        self.root = open_dataset_root(cfg)
        self.teacher = None
        if cfg.loss.lip_targets == "asr" and cfg.model.lip_reader.enabled:
            from .losses import AsrTeacher

            self.teacher = AsrTeacher(cfg.loss.asr_model).to(self.device)
        complete_model_config(cfg, self.spec, self.root, self.teacher.vocab_size if self.teacher else 0)
        n_subjects = len(self.spec.train_subjects(self.root))
        if cfg.model.n_subjects and cfg.model.n_subjects < n_subjects:  # more embeddings than subjects: unused ones
            raise ConfigError(f"model.n_subjects is {cfg.model.n_subjects} but the {self.spec.name} train split in "
                              f"'{self.root}' has {n_subjects} subjects (one style embedding each)",
                              f"set model.n_subjects={n_subjects} or more, or 0 for no style embedding")
        self.train_set = SequenceDataset(self.spec, self.root, "train", cache_audio=cfg.data.cache_audio,
                                         max_seconds=cfg.data.max_seconds, augment=cfg.data.augment)
        # without validation (train.val_every=0) the val split is not read: it may be absent
        self.val_set = SequenceDataset(self.spec, self.root, "val", cache_audio=cfg.data.cache_audio) \
            if tc.val_every else ()
        if len(self.train_set) == 0:
            raise DatasetError(f"the train split of '{self.root}' is empty", "check data.root and the dataset layout")

        _seed_all(tc.seed)
        from .model import JambaTalk

        self.model = JambaTalk(cfg.model).to(self.device)
        first = self.train_set[0]
        faces = None
        try:
            faces = self.spec.faces(self.root)
        except Exception:  # noqa: BLE001 - faces are only needed for rendering
            faces = None
        self.model.set_template(first["template"], faces)
        if tc.init_from and not resume:
            self._init_weights(Path(tc.init_from).expanduser())
        self.net = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                 find_unused_parameters=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        self.steps_per_epoch = math.ceil(math.ceil(len(self.train_set) / self.world) / tc.batch_size)
        self.total_steps = tc.max_steps or tc.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.loader = None  # the worker processes reading the train split (train.num_workers > 0), made on first use
        self.step = 0
        self.epoch = 0
        self.best = float("inf")
        self.history: dict[str, list] = {}
        if resume:
            self._load_state(self.out / "last")
        elif self.rank == 0 and (self.out / "last").exists():
            raise ConfigError(f"run folder '{self.out}' already holds a run",
                              "pass --resume to continue it, or choose another --out")
        self.first_step = self.step  # where this run began (a resumed one: its checkpoint's step)
        self.writer = None
        self.resumed, self._made_out = resume, not self.out.exists()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))

    def _init_weights(self, folder: Path) -> None:
        """Start from the weights of model folder ``folder`` (train.init_from), which must fit this model."""
        from .model.jambatalk import WEIGHTS_NAME

        if not (folder / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"train.init_from: '{folder / WEIGHTS_NAME}' does not exist",
                                  "give a model folder, e.g. runs/NAME/last or runs/NAME/best")
        self.model.load_state_dict(self._fitting_weights(
            folder, "train.init_from", "this model", "point train.init_from at a model folder written by jambatalk train",
            "start from a run of the same model config (or drop train.init_from)"))

    def _fitting_weights(self, folder: Path, context: str, model: str, damaged_fix: str, misfit_fix: str) -> dict:
        """The weights of model folder ``folder``: a CheckpointError (``context``: ...) with ``damaged_fix`` when
        they cannot be read, with ``misfit_fix`` when their names or shapes do not fit ``model``."""
        from .model.jambatalk import WEIGHTS_NAME, read_weights

        state = read_weights(folder / WEIGHTS_NAME, self.device, damaged_fix)
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or wrong:
            raise CheckpointError(f"{context}: the weights in '{folder}' do not fit {model} (missing {missing[:3]}, "
                                  f"unexpected {extra[:3]}, other shapes {wrong[:3]})", misfit_fix)
        return state

    def _lr_factor(self, step: int) -> float:
        tc = self.cfg.train
        if tc.warmup_steps and step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        if tc.schedule == "cosine":
            span = max(1, self.total_steps - tc.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - tc.warmup_steps) / span)))
        return 1.0

    # -- data ----------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> list[int]:
        """The same shuffled order on every rank for an epoch (seeded), then this rank's shard."""
        g = np.random.default_rng(self.cfg.train.seed * 100003 + epoch)
        order = g.permutation(len(self.train_set)).tolist()
        n = math.ceil(len(order) / self.world) * self.world
        order = (order + order[: n - len(order)])[self.rank::self.world]
        return order

    def _epoch_batches(self, epoch: int, skip: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of an epoch from its ``skip``-th on, each a list of (item index, item seed): the
        seed (of the run's seed, the epoch and the item's place in the whole epoch's order) draws its crop and
        augmentation, so that every loader worker reads the same item, and a resumed run the same batches."""
        order = self._epoch_order(epoch)
        seed, bs = self.cfg.train.seed, self.cfg.train.batch_size
        items = [(j, _derived_seed(seed, _ITEM_STREAM, epoch, self.rank + p * self.world))
                 for p, j in enumerate(order)]
        return [items[i: i + bs] for i in range(skip * bs, len(items), bs)]

    def _batches(self, epoch: int, skip: int):
        from .data import collate

        batches = self._epoch_batches(epoch, skip)
        if not self.cfg.train.num_workers:
            for batch in batches:
                yield collate([self.train_set[x] for x in batch])
            return
        if self.loader is None:
            self.loader = _WorkerLoader(self.train_set, self.cfg.train.num_workers, self.device.type == "cuda")
        yield from self.loader.epoch(batches)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # -- steps ---------------------------------------------------------------------------------
    def _forward(self, batch: dict, train: bool):
        from .losses import compute_losses

        amp = self.cfg.train.amp and self.device.type == "cuda"
        # validation bypasses the DDP wrapper: its forward is a collective (buffer broadcast), and ranks
        # validate different numbers of sequences
        net = self.net if train else self.model
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net(batch["audio"], batch["template"], n_frames=batch["vertices"].shape[1],
                           audio_lengths=batch.get("audio_lengths"), frame_lengths=batch.get("frame_lengths"),
                           subject_index=batch.get("subject_index"), lip_reading=train,
                           target_vertices=batch["vertices"] if train else None,
                           gt_lip_reading=train and self.cfg.loss.lip_gt > 0)
            return compute_losses(out, batch, self.cfg.loss, self.cfg.model, self.teacher)

    def train_step(self, batch: dict) -> dict[str, float]:
        # this step's dropout on this rank (replicas with the same masks drop the same units of different data)
        torch.manual_seed(_derived_seed(self.cfg.train.seed, _STEP_STREAM, self.step, self.rank))
        self.net.train()
        losses = self._forward(self._to_device(batch), train=True)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    #: loss terms averaged by validate(), in a fixed order so that ranks can sum them together
    VAL_TERMS = ("total", "vertex", "velocity", "lip_vertex", "balance", "lip_latent", "lip_ctc", "audio_phonemes")

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        from .data import collate

        self.model.eval()
        sums = [0.0] * (2 * len(self.VAL_TERMS))  # Python floats: MPS has no float64 tensors
        for i in range(self.rank, len(self.val_set), self.world):
            losses = self._forward(self._to_device(collate([self.val_set[i]])), train=False)
            for j, k in enumerate(self.VAL_TERMS):
                if k in losses:
                    sums[j] += float(losses[k])
                    sums[len(self.VAL_TERMS) + j] += 1
        if self.distributed:
            reduced = torch.tensor(sums, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(reduced)
            sums = reduced.tolist()
        n = len(self.VAL_TERMS)
        return {k: float(sums[j] / sums[n + j]) for j, k in enumerate(self.VAL_TERMS) if sums[n + j] > 0}

    def _log(self, tag: str, values: dict[str, float]) -> None:
        if self.rank != 0:
            return
        for k, v in values.items():
            self.history.setdefault(f"{tag}/{k}", []).append([self.step, v])
            if self.writer is not None:
                self.writer.add_scalar(f"{tag}/{k}", v, self.step)

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, name: str) -> None:
        if self.rank != 0:
            return
        import yaml

        from .fileio import atomic_dir, atomic_path

        # the folder is replaced whole, once its four files are written: a full disk or an interrupt while
        # writing left a folder with weights and no trainer state, which neither --resume nor a new run took
        with atomic_dir(self.out / name) as folder:
            self.model.write_model_files(folder)
            torch.save({"step": self.step, "epoch": self.epoch, "best": self.best, "history": self.history,
                        "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "rng": _rng_state()}, folder / "trainer_state.pt")
            (folder / "experiment.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        with atomic_path(self.out / "history.json") as tmp:
            tmp.write_text(json.dumps(self.history))

    #: what trainer_state.pt holds (written by _save)
    STATE_KEYS = frozenset({"step", "epoch", "best", "history", "optimizer", "scheduler", "rng"})

    #: train settings a resumed run keeps: the optimiser's and the batches' (the stored optimiser and scheduler
    #: states and the data order follow them); the length of the run, logging, saving and the device may change
    RESUME_KEEPS = ("optimizer", "lr", "weight_decay", "betas", "schedule", "warmup_steps", "grad_clip", "batch_size",
                    "seed")

    #: settings outside train that a resumed run may change: where the data lies and how it is read, and the
    #: silence gate (inference only)
    # model.subjects: the dataset's names for the style indices, which runs made before it was kept lack
    RESUME_FREE = ("data.root", "data.generate", "data.n_sentences", "data.cache_audio", "model.silence_gate.",
                   "model.subjects")

    def _check_resume_settings(self, folder: Path) -> None:
        """A ConfigError naming every train setting of RESUME_KEEPS that differs from the run's own (its
        experiment.yaml): a new learning rate was recorded but not applied (the scheduler's state wins), and a new
        batch size broke the data order; and another naming every model, loss or data setting that differs
        (except RESUME_FREE)."""
        import yaml

        path = folder / "experiment.yaml"
        try:
            saved_all = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            saved = saved_all.get("train") or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            return  # no readable record of the run's settings: the state checks below still apply
        now = to_dict(self.cfg.train)
        changed = [f"train.{k} {saved[k]!r} -> {now[k]!r}" for k in self.RESUME_KEEPS
                   if k in saved and saved[k] != now[k]]
        if changed:
            raise ConfigError(f"cannot resume '{self.out}' with changed settings ({'; '.join(changed)}): the run's "
                              f"optimiser state and data order were made with its own ({path})",
                              "resume with the run's values (change only epochs, max_steps, logging, saving or the "
                              f"device), or start a new --out with train.init_from={folder} to go on with new ones")
        # the model, the losses and the data a run trains on: a changed one was taken without a word where the
        # weights' names and shapes still fitted (attention span, dropout, loss weights, crops)
        ours = to_dict(self.cfg)
        changed = [f"{key} {old!r} -> {new!r}" for section in ("model", "loss", "data")
                   for key, old, new in _differences(section, saved_all.get(section), ours[section])
                   if not key.startswith(self.RESUME_FREE)]
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise ConfigError(f"cannot resume '{self.out}' with a changed model, loss or data ({shown}): a resumed "
                              f"run continues the one it was ({path})",
                              "resume with the run's config unchanged (data.root may move), or start a new --out "
                              f"with train.init_from={folder} to fine-tune with the new settings")

    def _load_state(self, folder: Path) -> None:
        state_path = folder / "trainer_state.pt"
        if not state_path.is_file():
            raise CheckpointError(f"cannot resume: '{state_path}' does not exist",
                                  "start a new run without --resume, or pass the --out of an earlier run")
        self._check_resume_settings(folder)
        damaged_fix = f"the checkpoint is damaged: resume from a copy of the run, or start a new run with " \
                      f"train.init_from={self.out / 'best'}"
        weights = self._fitting_weights(
            folder, "cannot resume", f"this run's model (its config changed since they were saved; the run's own is "
            f"{folder / 'experiment.yaml'})", damaged_fix,
            "resume with the run's config unchanged, or start a new --out with train.init_from=... for a different model")
        try:
            state = _read_trainer_state(state_path)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: pickle or zip errors
            said = str(exc).splitlines()[0][:200] if str(exc) else "it ends before its data"  # an empty file
            raise CheckpointError(f"cannot resume: '{state_path}' cannot be read ({type(exc).__name__}: {said})",
                                  damaged_fix) from None
        missing = sorted(self.STATE_KEYS - set(state)) if isinstance(state, dict) else None
        if missing is None or missing:
            held = f"a dict without {missing}" if missing else type(state).__name__
            raise CheckpointError(f"cannot resume: '{state_path}' is not a trainer state written by jambatalk train "
                                  f"(it holds {held})", damaged_fix)
        self.model.load_state_dict(weights)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # a same-length state of another model loads, then fails a step
                for param in group["params"]:
                    for name, value in self.optimizer.state.get(param, {}).items():
                        if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                            raise ValueError(f"its {name} of shape {tuple(value.shape)} is for a parameter of shape "
                                             f"{tuple(param.shape)}")
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.epoch, self.best = int(state["step"]), int(state["epoch"]), float(state["best"])
            self.history = dict(state["history"])
            _set_rng_state(state["rng"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume: the trainer state in '{state_path}' does not fit this run "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                                  damaged_fix) from None

    # -- loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        from tqdm import tqdm

        tc = self.cfg.train
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, desc="train",
                   dynamic_ncols=True)
        try:
            while self.step < self.total_steps:
                done_in_epoch = self.step - self.epoch * self.steps_per_epoch
                for batch in self._batches(self.epoch, done_in_epoch):
                    losses = self.train_step(batch)
                    if not math.isfinite(losses["total"]):  # the weights are poisoned from here on: stop, keep the saves
                        bar.close()
                        saved = [n for n in ("last", "best") if (self.out / n).is_dir()]
                        raise TrainingError(
                            f"training diverged at step {self.step}: the loss is {losses['total']} "
                            f"({', '.join(f'{k} {v:.4g}' for k, v in sorted(losses.items()) if k != 'total')}); "
                            + (f"the checkpoints saved before it ({' and '.join(f'{n}/' for n in saved)}) in "
                               f"'{self.out}' are kept" if saved else "no checkpoint had been saved"),
                            "lower train.lr (or raise train.warmup_steps), or check the data for broken sequences")
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['total']:.4g}", epoch=self.epoch)
                    if self.step % tc.log_every == 0 or self.step == 1:
                        self._log("train", losses)
                    if self.step >= self.total_steps:
                        break
                if self.step - self.epoch * self.steps_per_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self._end_of_epoch()
        finally:
            self.loader = None  # its worker processes end with it
            bar.close()  # before an error's message, not after it (when the bar is collected)
        self._save("last")
        if not math.isfinite(self.best):  # no validation chose one: best/ is the last weights (it was the first
            self._save("best")            # run's, kept by every resumed run)
        if self.writer is not None:
            self.writer.close()
        dump = os.environ.get("JAMBATALK_DUMP_RANK_WEIGHTS")
        if dump:  # debugging aid: each rank's final weights, to check that replicas agree
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, Path(dump) / f"rank{self.rank}.pt")
        if self.distributed:
            torch.distributed.barrier()
        return {"step": self.step, "epoch": self.epoch, "best_val_vertex": self.best}

    def _end_of_epoch(self) -> None:
        tc = self.cfg.train
        if tc.val_every and self.epoch % tc.val_every == 0 and len(self.val_set):
            val = self.validate()
            self._log("val", val)
            if self.progress:
                print(f"epoch {self.epoch}: " + ", ".join(f"val {k} {v:.4g}" for k, v in sorted(val.items())))
            if val.get("vertex", math.inf) < self.best:
                self.best = val["vertex"]
                self._save("best")
        if tc.save_every and self.epoch % tc.save_every == 0:
            self._save("last")

    def discard_unsaved(self) -> None:
        """After a new run failed or was stopped before its first checkpoint: remove its TensorBoard log (which
        a next run into the folder would continue) and the run folder where this run made it and it is empty."""
        if self.rank != 0 or self.resumed or (self.out / "last").exists():
            return
        if self.writer is not None:
            self.writer.close()
        shutil.rmtree(self.out / "tb", ignore_errors=True)
        if self._made_out and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()


def train(cfg: ExperimentConfig, out_dir, resume: bool = False, progress: bool = True) -> Trainer:
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress)
    try:
        trainer.fit()
    except BaseException:
        trainer.discard_unsaved()
        raise
    return trainer


def _stopped_note(out: Path, config: str, overrides: list[str]) -> str:
    """What a stopped ``jambatalk train`` leaves behind, and the command that continues it."""
    last = out / "last"
    if not (last / "trainer_state.pt").is_file():
        return f"no checkpoint had been saved in '{out}' (train.save_every sets how often one is)"
    try:
        epoch = int(torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True, mmap=True)["epoch"])
        when = f" (epoch {epoch})"
    except Exception:  # noqa: BLE001 - the note goes without the epoch
        when = ""
    command = shlex.join(["jambatalk", "train", "--config", config, "--out", str(out), "--resume", *overrides])
    return f"the last checkpoint{when} is in '{last}'; continue the run with: {command}"


#: model settings that training takes from the dataset (:func:`complete_model_config`), whatever the config says
DATASET_FACTS = ("model.n_vertices", "model.fps", "model.dataset", "model.lip_indices", "model.phoneme_head",
                 "model.subjects")


def cli_train(args) -> int:
    facts = [o.split("=", 1)[0] for o in args.overrides if o.split("=", 1)[0] in DATASET_FACTS]
    if facts:
        raise ConfigError(f"{', '.join(facts)}: training takes these from the dataset (data.dataset, data.root), so "
                          "the overrides would be ignored", "leave them out; the vertex count, frame rate and lip "
                          "mask follow the data (model.phoneme_head follows loss.audio_phonemes)")
    torch.set_flush_denormal(True)  # subnormal floats slow CPU kernels by orders of magnitude
    cfg = load_experiment(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    from .cli import Terminated

    try:
        trainer = train(cfg, out, resume=args.resume)
    except (KeyboardInterrupt, Terminated) as exc:  # Ctrl-C, or SIGTERM (a cluster job's time limit)
        if _dist_info()[0] == 0:  # the command line prints the note after "interrupted" / "terminated"
            exc.args = (_stopped_note(out, args.config, args.overrides),)
        raise
    if trainer.rank == 0:
        if trainer.step == trainer.first_step:
            print(f"nothing to train: the run in {out} had already reached its {trainer.total_steps} steps; raise "
                  "train.epochs (or train.max_steps) to train on")
        else:
            print(f"trained steps {trainer.first_step + 1}-{trainer.step} of {trainer.total_steps} ({trainer.epoch} "
                  f"whole epochs of {trainer.steps_per_epoch} steps); checkpoints in {out}/best and {out}/last")
    if trainer.distributed:
        torch.distributed.destroy_process_group()
    return 0
