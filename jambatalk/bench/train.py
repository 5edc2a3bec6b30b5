"""``jambatalk bench train``: training-step throughput on CPU, JambaTalk against the Transformer-only baseline.

One step = forward (encoder, decoder, head, lip reader), all losses of configs/default.yaml, backward,
gradient clipping and an optimizer step, on a synthetic batch: 4 items of 4 s of noise, random vertex
motion on the synthetic head (its vertex count), random phoneme labels. Models: configs/default.yaml's
model ("jambatalk") and configs/baselines/transformer.yaml's, random weights. Reported: median step time
over N steps after one warm-up step, as steps/s and frames/s, with the ratio
JambaTalk / Transformer-only (above 1: JambaTalk trains faster), and JambaTalk's throughput against the
same model with transformers' own conv feature encoder forward instead of the time-major one.
"""

from __future__ import annotations

from . import Record

__all__ = ["run", "measure", "make_batch", "BATCH", "SECONDS", "MODELS"]

BATCH = 4
SECONDS = 4.0
FPS = 30.0
N_TOKENS = 40
MODELS = ("jambatalk", "transformer")


def make_batch(n_vertices: int, template, seed: int = 0) -> dict:
    """A synthetic training batch shaped like :func:`jambatalk.data.collate`'s."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    T = int(SECONDS * FPS)
    tpl = torch.tensor(np.asarray(template, np.float32)).expand(BATCH, n_vertices, 3).clone()
    vertices = tpl[:, None] + 1e-3 * torch.randn(BATCH, T, n_vertices, 3, generator=g)
    phonemes = [[(f"p{int(k)}", 0.0, 0.0) for k in rng.integers(0, N_TOKENS, 30)] for _ in range(BATCH)]
    return {
        "audio": 0.1 * torch.randn(BATCH, int(SECONDS * 16000), generator=g),
        "vertices": vertices,
        "frame_mask": torch.ones(BATCH, T, dtype=torch.bool),
        "template": tpl,
        "phonemes": phonemes,
    }


def _setup(name: str, device=None):
    import numpy as np
    import torch
    import yaml

    from ..config import ExperimentConfig, from_dict
    from ..model import JambaTalk
    from ..synth import default_head
    from .rtf import CONFIGS

    path = CONFIGS / ("default.yaml" if name == "jambatalk" else f"baselines/{name}.yaml")
    data = yaml.safe_load(path.read_text())
    head = default_head()
    data["model"].update(n_vertices=head.n_vertices, fps=FPS, lip_indices=[int(i) for i in head.regions["lips"]])
    data["model"]["lip_reader"]["tokens"] = [f"p{i}" for i in range(N_TOKENS)]
    exp = from_dict(ExperimentConfig, data)
    torch.manual_seed(0)
    model = JambaTalk(exp.model, template=np.asarray(head.vertices, np.float32)).to(device or "cpu").train()
    tc = exp.train
    opt = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt([p for p in model.parameters() if p.requires_grad], lr=tc.lr, betas=tuple(tc.betas),
                    weight_decay=tc.weight_decay)
    batch = make_batch(head.n_vertices, head.vertices)
    batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return exp, model, optimizer, batch


def measure(name: str, steps: int, stock_encoder: bool = False, device=None, amp: bool = False) -> dict:
    """Median seconds of one training step of model ``name`` ("jambatalk" or "transformer") over ``steps``;
    ``stock_encoder``: with transformers' own conv feature encoder forward instead of the time-major one;
    ``device``: where the model and batch go (default: the CPU; a CUDA device is synchronised around each
    step); ``amp``: the forward and losses under bfloat16 autocast, as ``train.amp`` trains on CUDA."""
    import torch

    from ..losses import compute_losses
    from .gpu import timed

    device = torch.device(device or "cpu")
    exp, model, optimizer, batch = _setup(name, device)
    if stock_encoder:
        model.audio_encoder.wav2vec.feature_extractor.time_major = False

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(batch["audio"], batch["template"], n_frames=batch["vertices"].shape[1], lip_reading=True)
            losses = compute_losses(out, batch, exp.loss, exp.model)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if exp.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), exp.train.grad_clip)
        optimizer.step()

    step_s = timed(step, device, steps)  # after one warm-up step
    return {"step_s": step_s, "frames": batch["vertices"].shape[0] * batch["vertices"].shape[1],
            "threads": torch.get_num_threads(), "steps": steps}


def run(quick: bool = False) -> list[Record]:
    steps = 3 if quick else 10
    results = {name: measure(name, steps) for name in MODELS}
    records: list[Record] = []
    for name, r in results.items():
        params = {"batch": BATCH, "audio_s": SECONDS, "steps": r["steps"], "threads": r["threads"]}
        records.append(Record(f"train/{name}/step_time", r["step_s"], "s", params=params))
        records.append(Record(f"train/{name}/steps_per_s", 1.0 / r["step_s"], "steps/s", params=params))
        records.append(Record(f"train/{name}/frames_per_s", r["frames"] / r["step_s"], "frames/s", params=params))
    jt, tr = results["jambatalk"], results["transformer"]
    records.append(Record("train/jambatalk_vs_transformer/steps_per_s", 1.0 / jt["step_s"], "steps/s",
                          baseline="transformer", baseline_value=1.0 / tr["step_s"],
                          params={"ratio": "jambatalk throughput / transformer throughput"}))
    stock = measure("jambatalk", steps, stock_encoder=True)
    records.append(Record("train/jambatalk/encoder_vs_transformers_forward/steps_per_s", 1.0 / jt["step_s"],
                          "steps/s", baseline="transformers forward", baseline_value=1.0 / stock["step_s"],
                          params={"ratio": "throughput with the time-major feature encoder / with transformers' "
                                           "own forward"}))
    return records
