"""Wav2Vec 2.0 speech encoder with input normalisation and resampling to the mesh frame rate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioEncoderConfig
from ..errors import CheckpointError

__all__ = ["AudioEncoder", "resample_features", "frames_for_samples", "receptive_field"]


def receptive_field(kernels, strides) -> int:
    """Input samples seen by one output frame of a stack of strided convolutions."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf


def frames_for_samples(n_samples: int, fps: float, sample_rate: int = 16000) -> int:
    """Mesh frames covered by ``n_samples`` of audio (whole frames only)."""
    return int(n_samples * fps / sample_rate + 1e-6)


def resample_features(feats: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of (B, N, C) features to (B, length, C) over the same time span."""
    if feats.shape[1] == length:
        return feats
    if feats.shape[1] == 1:
        return feats.expand(-1, length, -1)
    return F.interpolate(feats.transpose(1, 2), size=length, mode="linear", align_corners=True).transpose(1, 2)


def _local_pretrained(name: str):
    """Load a Wav2Vec2Model from a local folder or the local hub cache; never downloads."""
    from transformers import Wav2Vec2Model

    try:
        return Wav2Vec2Model.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        where = "folder" if Path(name).exists() else "local hub cache"
        raise CheckpointError(
            f"pretrained audio encoder '{name}' could not be loaded from the {where} ({type(exc).__name__})",
            f"download it once on a connected machine (huggingface-cli download {name}) or pass a local folder "
            "in audio.pretrained; set audio.pretrained to null to use an encoder trained from scratch",
        ) from exc


class AudioEncoder(nn.Module):
    """Raw 16 kHz speech (B, N) -> Wav2Vec 2.0 hidden states (B, N_50Hz, H)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.pretrained:
            self.wav2vec = _local_pretrained(cfg.pretrained)
            self._sync_config_from_model()
        else:
            self.wav2vec = self._build(cfg)
        spec_embed = getattr(self.wav2vec, "masked_spec_embed", None)
        if spec_embed is not None:  # SpecAugment is off: the mask embedding is never used
            spec_embed.requires_grad_(False)
        if cfg.freeze_feature_extractor:
            for p in self.wav2vec.feature_extractor.parameters():
                p.requires_grad_(False)
        self.min_samples = receptive_field(cfg.conv_kernel, cfg.conv_stride)

    @staticmethod
    def _build(cfg: AudioEncoderConfig):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        hf = Wav2Vec2Config(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            conv_dim=list(cfg.conv_dim), conv_kernel=list(cfg.conv_kernel), conv_stride=list(cfg.conv_stride),
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
            do_stable_layer_norm=cfg.do_stable_layer_norm, feat_extract_norm=cfg.feat_extract_norm,
            apply_spec_augment=False, mask_time_prob=0.0, layerdrop=0.0, vocab_size=32,
        )
        return Wav2Vec2Model(hf)

    def _sync_config_from_model(self) -> None:
        """Record the loaded model's true size in our config so checkpoints rebuild it without the hub."""
        hf = self.wav2vec.config
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm",
                    "feat_extract_norm"):
            setattr(self.cfg, key, getattr(hf, key))
        self.cfg.conv_dim, self.cfg.conv_kernel = list(hf.conv_dim), list(hf.conv_kernel)
        self.cfg.conv_stride = list(hf.conv_stride)
        self.wav2vec.config.apply_spec_augment = False

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    def normalize(self, audio: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Zero mean, unit variance per utterance over its valid samples (padding stays zero)."""
        if lengths is None:
            mean = audio.mean(-1, keepdim=True)
            var = audio.var(-1, keepdim=True, unbiased=False)
            return (audio - mean) / torch.sqrt(var + 1e-7)
        mask = torch.arange(audio.shape[-1], device=audio.device)[None] < lengths[:, None]
        n = lengths[:, None].clamp_min(1).to(audio.dtype)
        mean = (audio * mask).sum(-1, keepdim=True) / n
        var = (((audio - mean) * mask) ** 2).sum(-1, keepdim=True) / n
        return (audio - mean) / torch.sqrt(var + 1e-7) * mask

    def feature_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = lengths
        for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
            out = torch.div(out - k, s, rounding_mode="floor") + 1
        return out.clamp_min(1)

    def n_frames(self, n_samples: int) -> int:
        """Encoder frames produced for ``n_samples`` of audio in one pass."""
        return int(self.feature_lengths(torch.tensor([max(n_samples, self.min_samples)]))[0])

    @torch.no_grad()
    def encode_windows(self, audio: torch.Tensor, window: int, context: int) -> torch.Tensor:
        """Encode one long utterance (1, N) in overlapping windows with bounded memory.

        Each window spans ``window`` samples; of its frames only the middle part, ``context`` samples
        away from an inner window edge, is kept, so every kept frame sees at least ``context`` samples
        of audio on each side. Audio no longer than ``window`` is encoded in one pass (identical to
        ``forward``). Normalisation uses the whole utterance's statistics, as a one-pass encoding does.
        """
        hop = self.cfg.hop_length
        N = audio.shape[-1]
        if N <= window:
            return self(audio)[0]
        if self.cfg.normalize_input:
            audio = self.normalize(audio, None)
        window, context = (window // hop) * hop, (context // hop) * hop
        stride = window - 2 * context
        if stride <= 0:
            raise ValueError(f"window {window} must exceed twice the context {context}")
        total = self.n_frames(N)
        out = None
        start = 0
        while True:
            end = min(N, start + window)
            seg = audio[:, start:end]
            if seg.shape[-1] < self.min_samples:
                seg = F.pad(seg, (0, self.min_samples - seg.shape[-1]))
            feats = self.wav2vec(seg).last_hidden_state
            if out is None:
                out = feats.new_zeros(audio.shape[0], total, feats.shape[-1])
            first = start // hop
            keep_from = 0 if start == 0 else context // hop
            keep_to = feats.shape[1] if end == N else (window - context) // hop
            lo, hi = first + keep_from, min(total, first + keep_to)
            out[:, lo:hi] = feats[:, keep_from: keep_from + hi - lo]
            if end == N:
                break
            start += stride
        return out

    def forward(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        """audio (B, N) at 16 kHz -> (hidden (B, Nf, H), feature lengths (B,))."""
        if self.cfg.normalize_input:
            audio = self.normalize(audio, lengths)
        if audio.shape[-1] < self.min_samples:
            audio = F.pad(audio, (0, self.min_samples - audio.shape[-1]))
        mask = None
        if lengths is not None and bool((lengths < audio.shape[-1]).any()):
            mask = (torch.arange(audio.shape[-1], device=audio.device)[None] < lengths[:, None]).long()
        out = self.wav2vec(audio, attention_mask=mask).last_hidden_state
        if lengths is None:
            flen = torch.full((audio.shape[0],), out.shape[1], device=audio.device, dtype=torch.long)
        else:
            flen = self.feature_lengths(lengths.clamp_min(self.min_samples)).clamp_max(out.shape[1])
        return out, flen


