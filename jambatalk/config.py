"""Configuration: one dataclass per component, nested in one model config.

Configs are validated on construction, round-trip through plain dicts (config.json, YAML files)
and accept dotted ``key=value`` overrides from the command line. Unknown keys are errors, so a
typo in a config file never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

__all__ = [
    "AudioEncoderConfig",
    "MoEConfig",
    "DecoderConfig",
    "LipReaderConfig",
    "SilenceGateConfig",
    "ModelConfig",
    "LossConfig",
    "TrainConfig",
    "DataConfig",
    "ExperimentConfig",
    "LAYER_KINDS",
    "ATTENTION_SPANS",
    "DECODER_TYPES",
    "default_schedule",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "load_experiment",
    "model_preset",
    "MODEL_PRESETS",
]

#: Layer kinds a decoder schedule may name.
LAYER_KINDS = ("mamba", "moe_mamba", "attention", "moe_attention")
#: Decoder types: the schedule-built Jamba stack, or the FaceFormer-style autoregressive baseline.
DECODER_TYPES = ("jamba", "faceformer")
#: Attention spans: full sequence, past only, or a window of past frames plus a lookahead.
ATTENTION_SPANS = ("bidirectional", "causal", "window")


def _check(cond: bool, problem: str, fix: str) -> None:
    if not cond:
        raise ConfigError(problem, fix)


def _max_threads() -> int:
    """The most torch threads ``train.threads`` may ask for: 4 per CPU of this machine, and at least 64 so that
    a config stays valid on a smaller machine (torch crashed at 10000)."""
    return max(64, 4 * (os.cpu_count() or 1))


def default_schedule(n_l: int) -> list[str]:
    """The paper's layer order: N_l x [M, MM] -> T -> N_l x [MM, M] -> MM."""
    return ["mamba", "moe_mamba"] * n_l + ["attention"] + ["moe_mamba", "mamba"] * n_l + ["moe_mamba"]


@dataclass
class AudioEncoderConfig:
    """Wav2Vec 2.0 speech encoder.

    ``pretrained`` names a hub model or local folder (loaded from the local cache only, never
    downloaded at run time); when None, an encoder of the given size is built with random
    weights (to be trained, or loaded from a jambatalk checkpoint).
    """

    pretrained: Optional[str] = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: list[int] = field(default_factory=lambda: [512] * 7)
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    feat_extract_norm: str = "group"
    freeze_feature_extractor: bool = True
    normalize_input: bool = True
    sample_rate: int = 16000

    def __post_init__(self):
        _check(self.num_attention_heads >= 1, f"audio.num_attention_heads is {self.num_attention_heads}",
               "use at least 1 head")
        _check(self.num_hidden_layers >= 0, f"audio.num_hidden_layers is {self.num_hidden_layers}",
               "use 0 or more Transformer layers")
        _check(all(int(v) >= 1 for v in (*self.conv_dim, *self.conv_kernel, *self.conv_stride)),
               "audio.conv_dim, conv_kernel and conv_stride must be >= 1 in every layer",
               f"got conv_dim {self.conv_dim}, conv_kernel {self.conv_kernel}, conv_stride {self.conv_stride}")
        _check(self.hidden_size > 0 and self.hidden_size % self.num_attention_heads == 0,
               f"audio.hidden_size {self.hidden_size} is not a positive multiple of "
               f"audio.num_attention_heads {self.num_attention_heads}", "make hidden_size divisible by the head count")
        _check(len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) > 0,
               "audio.conv_dim, conv_kernel and conv_stride differ in length", "give one entry per conv layer in each")
        _check(self.feat_extract_norm in ("group", "layer"),
               f"audio.feat_extract_norm is {self.feat_extract_norm!r}", "use 'group' or 'layer'")
        _check(self.sample_rate == 16000, f"audio.sample_rate is {self.sample_rate}",
               "Wav2Vec 2.0 works at 16000 Hz; the audio loader resamples any input to it")

    @property
    def hop_length(self) -> int:
        """Samples per encoder frame (320 for Wav2Vec 2.0, i.e. 50 Hz)."""
        return math.prod(self.conv_stride)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass
class MoEConfig:
    """Mixture of experts feed-forward with top-k routing per token: top_k 1 is Switch routing (the chosen
    expert scaled by its probability), top_k = n_experts a dense mixture of every expert."""

    n_experts: int = 2
    top_k: int = 2
    hidden_ratio: int = 4
    balance_coef: float = 0.01

    def __post_init__(self):
        _check(self.n_experts >= 1, f"moe.n_experts is {self.n_experts}", "use at least 1 expert")
        _check(1 <= self.top_k <= self.n_experts, f"moe.top_k {self.top_k} is outside 1..n_experts ({self.n_experts})",
               "choose top_k between 1 and n_experts")
        _check(self.hidden_ratio >= 1, f"moe.hidden_ratio is {self.hidden_ratio}", "use a ratio >= 1")


@dataclass
class DecoderConfig:
    """The hybrid Jamba decoder: a schedule of Mamba, MoE-Mamba and attention layers.

    ``type: faceformer`` selects the FaceFormer-style autoregressive baseline instead
    (jambatalk/model/faceformer.py): one layer per schedule entry (each "attention"), with n_heads,
    mlp_ratio, dropout and ``period`` (0: the model's fps, rounded).
    """

    type: str = "jamba"  # "jamba" | "faceformer"
    period: int = 0  # faceformer only: period of the positional encoding and attention bias, frames
    d_model: int = 512
    n_l: int = 1
    schedule: Optional[list[str]] = None  # None: the paper's order for n_l
    # Mamba mixer
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Optional[int] = None  # None: ceil(d_model / 16)
    use_kernels: str = "auto"  # "auto" | "always" | "never"
    # attention mixer
    n_heads: int = 8
    n_kv_heads: int = 2
    rope: str = "lrl"  # "lrl" (low-rank learned) | "plain" | "none"
    rope_rank: int = 16
    rope_base: float = 10000.0
    attention_span: str = "bidirectional"
    window: int = 0  # past frames each frame sees when attention_span == "window"
    lookahead: int = 0  # future frames each frame sees when attention_span == "window"
    # feed-forward
    mlp_ratio: int = 4
    dropout: float = 0.0
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self):
        if isinstance(self.moe, dict):
            self.moe = from_dict(MoEConfig, self.moe, "decoder.moe")
        if self.schedule is None:
            _check(self.n_l >= 0, f"decoder.n_l is {self.n_l}", "use 0 or more [Mamba, MoE-Mamba] pairs per side")
            self.schedule = default_schedule(self.n_l)
        self.schedule = list(self.schedule)
        _check(len(self.schedule) > 0, "decoder.schedule is empty", "list at least one layer kind")
        bad = [k for k in self.schedule if k not in LAYER_KINDS]
        _check(not bad, f"decoder.schedule names unknown layer kinds {bad}", f"use only {list(LAYER_KINDS)}")
        _check(self.d_model > 0, f"decoder.d_model is {self.d_model}", "use a positive width")
        _check(self.type in DECODER_TYPES, f"decoder.type is {self.type!r}", f"use one of {list(DECODER_TYPES)}")
        if self.type == "faceformer":
            _check(all(k == "attention" for k in self.schedule),
                   f"decoder.type is 'faceformer' but decoder.schedule lists {self.schedule}",
                   "write decoder.schedule: [attention] (one entry per FaceFormer layer)")
        _check(self.period >= 0, f"decoder.period is {self.period}", "use 0 (the frame rate) or a frame count")
        _check(self.mlp_ratio >= 1, f"decoder.mlp_ratio is {self.mlp_ratio}", "use a ratio >= 1")
        _check(self.dt_rank is None or self.dt_rank >= 1, f"decoder.dt_rank is {self.dt_rank}",
               "use null (ceil(d_model / 16)) or a rank >= 1")
        if self.has_attention:
            _check(self.n_heads >= 1, f"decoder.n_heads is {self.n_heads}", "use at least 1 head")
            _check(self.rope != "lrl" or self.rope_rank >= 1, f"decoder.rope_rank is {self.rope_rank}",
                   "use a rank >= 1 for the learned rotary embedding")
            _check(self.d_model % self.n_heads == 0,
                   f"decoder.d_model {self.d_model} is not divisible by n_heads {self.n_heads}",
                   "choose n_heads dividing d_model")
            _check(self.n_kv_heads >= 1 and self.n_heads % self.n_kv_heads == 0,
                   f"decoder.n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}",
                   "choose n_kv_heads dividing n_heads (n_kv_heads == n_heads is plain multi-head attention)")
            _check(self.head_dim % 2 == 0, f"decoder head_dim {self.head_dim} is odd",
                   "rotary embeddings rotate pairs: make d_model / n_heads even")
        _check(self.rope in ("lrl", "plain", "none"), f"decoder.rope is {self.rope!r}", "use 'lrl', 'plain' or 'none'")
        _check(self.attention_span in ATTENTION_SPANS, f"decoder.attention_span is {self.attention_span!r}",
               f"use one of {list(ATTENTION_SPANS)}")
        _check(self.window >= 0 and self.lookahead >= 0, "decoder.window and decoder.lookahead must be >= 0",
               "give frame counts >= 0")
        if self.attention_span == "window":
            _check(self.window > 0, "decoder.attention_span is 'window' but decoder.window is 0",
                   "set decoder.window to the number of past frames each frame attends to")
        _check(self.use_kernels in ("auto", "always", "never"), f"decoder.use_kernels is {self.use_kernels!r}",
               "use 'auto', 'always' or 'never'")
        _check(self.d_state >= 1 and self.d_conv >= 1 and self.expand >= 1,
               "decoder.d_state, d_conv and expand must be >= 1", "use the defaults 16, 4, 2")
        _check(0.0 <= self.dropout < 1.0, f"decoder.dropout is {self.dropout}", "use a value in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    @property
    def has_attention(self) -> bool:
        return any(k in ("attention", "moe_attention") for k in self.schedule)

    @property
    def is_streamable(self) -> bool:
        """True when no layer sees unboundedly far into the future (and the decoder can run step by step)."""
        if self.type == "faceformer":
            return False
        return not self.has_attention or self.attention_span in ("causal", "window")


@dataclass
class LipReaderConfig:
    """Training-only lip reader: lip offsets -> Transformer lip encoder -> latents and CTC logits."""

    enabled: bool = True
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    ff_ratio: int = 4
    dropout: float = 0.1
    # CTC output tokens; index 0 is always the blank. Empty: the lip reader has no CTC head.
    tokens: list = field(default_factory=list)
    latent_dim: Optional[int] = None  # None: the audio encoder's hidden size
    # lip offsets are multiplied by this before the input layer: mesh offsets are millimetres in metres
    # (FLAME, the built-in head), far below the unit-scale positional encoding they are added to
    input_scale: float = 1000.0

    def __post_init__(self):
        _check(self.input_scale > 0, f"lip_reader.input_scale is {self.input_scale}",
               "use a positive scale (1000 for meshes in metres, 1 for millimetres)")
        if self.enabled:
            _check(self.n_heads >= 1, f"lip_reader.n_heads is {self.n_heads}", "use at least 1 head")
            _check(self.d_model % self.n_heads == 0,
                   f"lip_reader.d_model {self.d_model} is not divisible by n_heads {self.n_heads}",
                   "choose n_heads dividing d_model")
            _check(self.n_layers >= 1, f"lip_reader.n_layers is {self.n_layers}", "use at least 1 layer")
            _check(0.0 <= self.dropout < 1.0, f"lip_reader.dropout is {self.dropout}", "use a value in [0, 1)")

    @property
    def vocab_size(self) -> int:
        return len(self.tokens) + 1 if self.tokens else 0


@dataclass
class SilenceGateConfig:
    """Closing the mouth in pauses at inference (:mod:`jambatalk.silence`); training never uses it.

    ``enabled`` is the model's default, which :func:`jambatalk.animate` (``silence_gate=``), :class:`jambatalk.Stream`
    and ``jambatalk animate --silence-gate`` override.
    """

    enabled: bool = False
    threshold_db: float = 35.0  # speech: within this many dB of the loudest frame so far ...
    floor_db: float = -60.0  # ... and louder than this (dB re full scale, mean square over the frame) ...
    # ... once speech has begun: a frame this many dB above the quietest before it (0: at once), or one as loud
    # as onset_level_db (room noise before the first word moved the mouth of a stream: it was the loudest so far)
    onset_db: float = 6.0
    onset_level_db: float = -30.0
    hold: float = 0.1  # seconds the gain stays at 1 after a speech frame
    release: float = 0.1  # seconds over which it then falls to 0
    attack: float = 0.1  # seconds before the next speech frame over which it rises back to 1

    def __post_init__(self):
        for name in ("threshold_db", "onset_db", "hold", "release", "attack"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"silence_gate.{name} is {value}", f"give {name} >= 0")
        _check(math.isfinite(self.floor_db), f"silence_gate.floor_db is {self.floor_db}", "give a level in dB, e.g. -60")
        _check(math.isfinite(self.onset_level_db), f"silence_gate.onset_level_db is {self.onset_level_db}",
               "give a level in dB, e.g. -30")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a JambaTalk model; stored as config.json in every checkpoint."""

    n_vertices: int = 5023
    fps: float = 30.0
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    lip_reader: LipReaderConfig = field(default_factory=LipReaderConfig)
    lip_indices: list[int] = field(default_factory=list)  # vertex indices the lip reader sees
    n_subjects: int = 0  # > 0: a learned per-subject style embedding (off in the paper)
    subjects: list[str] = field(default_factory=list)  # the training subjects' names, in style-index order
    dataset: Optional[str] = None  # name of the dataset spec the model was trained for (informative)
    silence_gate: SilenceGateConfig = field(default_factory=SilenceGateConfig)
    # a linear classifier from the audio encoder's states to lip_reader.tokens (+ silence), trained by
    # loss.audio_phonemes; inference does not use it
    phoneme_head: bool = False

    def __post_init__(self):
        for name, cls in (("audio", AudioEncoderConfig), ("decoder", DecoderConfig), ("lip_reader", LipReaderConfig),
                          ("silence_gate", SilenceGateConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, from_dict(cls, getattr(self, name), name))
        _check(self.n_vertices > 0, f"n_vertices is {self.n_vertices}", "give the mesh's vertex count")
        _check(math.isfinite(self.fps) and self.fps > 0, f"fps is {self.fps}", "give the mesh frame rate, e.g. 30 or 25")
        self.lip_indices = [int(i) for i in self.lip_indices]
        if self.lip_indices:
            _check(min(self.lip_indices) >= 0 and max(self.lip_indices) < self.n_vertices,
                   f"lip_indices reach {max(self.lip_indices)} but the mesh has {self.n_vertices} vertices",
                   "give lip indices of this mesh")
        _check(self.n_subjects >= 0, f"n_subjects is {self.n_subjects}", "use 0 (no style embedding) or more")
        self.subjects = [str(name) for name in self.subjects]
        _check(len(self.subjects) <= self.n_subjects, f"subjects lists {len(self.subjects)} names but n_subjects is "
               f"{self.n_subjects}", "name at most n_subjects subjects (training fills the list from the dataset)")


@dataclass
class LossConfig:
    """Loss weights and the source of lip-reading targets."""

    vertex: float = 1000.0
    velocity: float = 1000.0
    # > 0: the lip vertices (model.lip_indices) again, as an MSE of their own, so that the lips, where
    # LVE is measured, weigh more than their share of the mesh
    lip_vertex: float = 0.0
    lip_latent: float = 0.001
    lip_ctc: float = 0.0001
    balance: float = 1.0  # multiplies each MoE layer's balancing loss (its own coef is in moe.balance_coef)
    # > 0: the lip reader also reads the ground-truth lips, with the same latent and CTC terms scaled by
    # this factor; these terms train the lip reader alone (no gradient reaches the decoder)
    lip_gt: float = 0.0
    # "phonemes": labels from the dataset and the audio encoder's detached hidden states as latent
    # targets (offline); "asr": a frozen Wav2Vec2ForCTC (asr_model) gives both (the paper's).
    lip_targets: str = "phonemes"
    asr_model: Optional[str] = None
    # > 0: a linear phoneme classifier on the audio encoder's states (model.phoneme_head) learns the
    # dataset's phoneme at every audio frame (cross-entropy), so that the encoder learns phonetic
    # features the way an ASR-fine-tuned Wav2Vec 2.0 has them; needs phoneme labels (lip_targets=phonemes)
    audio_phonemes: float = 0.0

    def __post_init__(self):
        _check(self.lip_targets in ("phonemes", "asr"), f"loss.lip_targets is {self.lip_targets!r}",
               "use 'phonemes' or 'asr'")
        _check(not (self.lip_targets == "asr" and not self.asr_model),
               "loss.lip_targets is 'asr' but loss.asr_model is not set",
               "name a Wav2Vec2ForCTC model (hub name or local folder) in loss.asr_model")
        _check(not (self.audio_phonemes > 0 and self.lip_targets == "asr"),
               "loss.audio_phonemes needs the dataset's phoneme labels but loss.lip_targets is 'asr'",
               "use loss.lip_targets=phonemes, or set loss.audio_phonemes=0")
        for k in ("vertex", "velocity", "lip_vertex", "lip_latent", "lip_ctc", "balance", "lip_gt", "audio_phonemes"):
            _check(math.isfinite(getattr(self, k)), f"loss.{k} is {getattr(self, k)}, not a finite number",
                   "use a finite weight >= 0")
            _check(getattr(self, k) >= 0, f"loss.{k} is negative", "use weights >= 0")


@dataclass
class DataConfig:
    """Which dataset to train on and where it lives."""

    dataset: str = "synthetic"
    root: Optional[str] = None  # processed layout: vertices_npy/, wav/, templates.pkl
    generate: bool = False  # build the synthetic corpus into root if it is missing
    n_sentences: int = 0  # synthetic corpus size when generated (0: the spec's default)
    cache_audio: bool = True
    max_seconds: float = 0.0  # > 0: crop training sequences to this length
    augment: bool = False  # a new random room, microphone and noise for every training read

    #: the shortest crop: two frames at 25 fps and more (the velocity loss compares neighbouring frames)
    MIN_CROP_SECONDS = 0.1

    def __post_init__(self):
        _check(self.n_sentences == 0 or self.n_sentences >= 3, f"data.n_sentences is {self.n_sentences}",
               "set data.n_sentences to 0 (the dataset's default) or 3 or more (train, val and test need a "
               "sentence each)")
        _check(math.isfinite(self.max_seconds) and (self.max_seconds == 0 or self.max_seconds >= self.MIN_CROP_SECONDS),
               f"data.max_seconds is {self.max_seconds}",
               f"use 0 (whole sequences) or a crop of at least {self.MIN_CROP_SECONDS} s")


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "constant"  # "constant" | "cosine"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    epochs: int = 100
    max_steps: int = 0  # > 0: stop after this many optimizer steps
    batch_size: int = 1
    # > 0: processes that read, crop and collate the train split's batches ahead of the steps (0: the training
    # process reads them between steps); the batches are the same with any number
    num_workers: int = 0
    amp: bool = True  # mixed precision on CUDA only
    seed: int = 0
    val_every: int = 1  # epochs
    log_every: int = 10  # steps
    save_every: int = 1  # epochs
    device: str = "auto"
    threads: int = 0  # > 0: torch intra-op threads for CPU training (0: torch's default)
    # a model folder (a run's best/ or last/) whose weights start this run: fine-tuning with a fresh
    # optimizer, schedule and step count (--resume instead continues a run where it stopped)
    init_from: Optional[str] = None

    def __post_init__(self):
        limit = _max_threads()
        _check(0 <= self.threads <= limit, f"train.threads is {self.threads}",
               f"use 0 (torch's default) or a thread count up to {limit} (4 per CPU of this machine, at least 64; "
               f"it has {os.cpu_count() or 1})")
        _check(isinstance(self.device, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               f"train.device is {self.device!r}", "use auto, cpu, cuda, cuda:N (a GPU's index) or mps")
        _check(self.optimizer in ("adam", "adamw"), f"train.optimizer is {self.optimizer!r}", "use 'adam' or 'adamw'")
        _check(self.schedule in ("constant", "cosine"), f"train.schedule is {self.schedule!r}",
               "use 'constant' or 'cosine'")
        _check(self.lr > 0 and math.isfinite(self.lr), f"train.lr is {self.lr}", "use a positive learning rate")
        _check(self.weight_decay >= 0 and math.isfinite(self.weight_decay), f"train.weight_decay is {self.weight_decay}",
               "use 0 (none) or a positive weight decay, e.g. 0.01")
        _check(self.batch_size >= 1, f"train.batch_size is {self.batch_size}", "use a batch size >= 1")
        _check(self.log_every >= 1, f"train.log_every is {self.log_every}", "log every 1 or more steps")
        for name in ("epochs", "val_every", "save_every", "warmup_steps", "max_steps", "num_workers"):
            _check(getattr(self, name) >= 0, f"train.{name} is {getattr(self, name)}", f"use train.{name} >= 0")
        _check(self.epochs >= 1 or self.max_steps >= 1, "train.epochs and train.max_steps are both 0",
               "set one of them")
        _check(0 <= self.seed < 2 ** 32, f"train.seed is {self.seed}", "use a seed in 0 .. 2^32 - 1")
        _check(self.grad_clip >= 0, f"train.grad_clip is {self.grad_clip}", "use 0 (no clipping) or a positive norm")
        _check(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
               and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
               f"train.betas is {self.betas}", "give two values in [0, 1), e.g. [0.9, 0.999]")


@dataclass
class ExperimentConfig:
    """A training / evaluation run: what a configs/*.yaml file holds."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: Optional[str] = None  # start from a model preset, then apply `model`


# ----------------------------------------------------------------------------- dict conversion


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' should be a mapping, got {value!r}", "write it as key: value pairs")
        return from_dict(tp, value, key)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}' should be true or false, got {value!r}", "write true or false")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config key '{key}' should be a number, got {value!r}", "write a number")
        try:
            num = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}' should be a number, got {value!r}", "write a number") from None
        if tp is int:
            if not num.is_integer():
                raise ConfigError(f"config key '{key}' should be a whole number, got {value!r}", "write an integer")
            return int(num)
        return num
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' should be text, got {value!r}", "write a string")
        return value
    if tp is list or origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' should be a list, got {value!r}", "write a list, e.g. [1, 2]")
        item = typing.get_args(tp)
        return [_convert(v, item[0], f"{key}[{i}]") for i, v in enumerate(value)] if item else value
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (nested) dict, refusing unknown keys with a clear message."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or cls.__name__}' should be a mapping, got {data!r}",
                          "write it as key: value pairs")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(map(str, set(data) - set(fields)))
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"unknown config key(s) {unknown} in {where}", f"known keys there: {sorted(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (JSON / YAML friendly)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _set_dotted(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}' goes through '{part}', which is not a section", "check the key")
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a config dict."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' has no '='", "write overrides as section.key=value, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_experiment(path: str | os.PathLike | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML (or JSON) experiment config, apply overrides, resolve the preset and validate."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist", "pass one of the files in configs/, e.g. configs/debug.yaml")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start})",
                              "save it as UTF-8 (a YAML or JSON text file)") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            what = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"config file '{path}' is not valid YAML{at} ({what})", "fix the syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' holds {type(data).__name__}, not a mapping", "write key: value pairs")
    data = apply_overrides(data, overrides or [])
    preset = data.get("preset")
    if preset is not None:
        if data.get("model") is not None and not isinstance(data["model"], dict):
            raise ConfigError(f"'model' is {data['model']!r}, not a section of key: value pairs",
                              "write the model's keys under 'model:', or leave it out to take the preset as it is")
        base = to_dict(model_preset(preset))
        decoder = (data.get("model") or {}).get("decoder")
        if isinstance(decoder, dict) and "n_l" in decoder and "schedule" not in decoder:
            del base["decoder"]["schedule"]  # the preset's layers follow its n_l: a new n_l lays them out again
        data["model"] = _merge(base, data.get("model") or {})
    return from_dict(ExperimentConfig, data)


# ----------------------------------------------------------------------------- presets


def _large_encoder() -> AudioEncoderConfig:
    """The size of the paper's encoder (Wav2Vec2 XLSR-53 large: 24 layers, width 1024)."""
    return AudioEncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                              do_stable_layer_norm=True, feat_extract_norm="layer")


def _vocaset() -> ModelConfig:
    return ModelConfig(
        n_vertices=5023, fps=30.0, dataset="vocaset", audio=_large_encoder(),
        decoder=DecoderConfig(d_model=512, n_l=1, n_heads=8, n_kv_heads=2),
        lip_reader=LipReaderConfig(enabled=False),
    )


def _biwi() -> ModelConfig:
    return ModelConfig(
        n_vertices=23370, fps=25.0, dataset="biwi", audio=_large_encoder(),
        decoder=DecoderConfig(d_model=1024, n_l=2, n_heads=16, n_kv_heads=4),
        lip_reader=LipReaderConfig(enabled=False),
    )


def _tiny() -> ModelConfig:
    return ModelConfig(
        n_vertices=64, fps=25.0,
        audio=AudioEncoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=[32, 32, 32], conv_kernel=[10, 8, 4], conv_stride=[5, 8, 8],
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
        decoder=DecoderConfig(d_model=32, n_l=1, d_state=4, n_heads=4, n_kv_heads=2, rope_rank=4, mlp_ratio=2,
                              moe=MoEConfig(n_experts=2, top_k=1, hidden_ratio=2)),
        lip_reader=LipReaderConfig(d_model=32, n_layers=1, n_heads=2, dropout=0.0, tokens=["a", "b", "c", "d"]),
        lip_indices=list(range(0, 16)),
    )


MODEL_PRESETS = {"vocaset": _vocaset, "biwi": _biwi, "tiny": _tiny}


def model_preset(name: str) -> ModelConfig:
    """A fresh ModelConfig for a named preset: 'vocaset', 'biwi' or 'tiny'."""
    if not isinstance(name, str) or name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset '{name}'", f"choose one of: {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]()
