"""Training-only lip reader: predicted lip motion -> Transformer lip encoder -> latents and CTC logits."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import LipReaderConfig
from .audio_encoder import resample_features

__all__ = ["LipReader", "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class LipReader(nn.Module):
    """Reads speech content from lip offsets (B, T, n_lip, 3) at the audio-feature rate.

    Outputs latent features (B, Na, latent_dim), to be matched to audio-side targets, and CTC
    log-probabilities (B, Na, vocab) over ``cfg.tokens`` (blank = 0) when tokens are configured.
    """

    def __init__(self, cfg: LipReaderConfig, n_lip_vertices: int, latent_dim: int):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(3 * n_lip_vertices, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ff_ratio * cfg.d_model, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.latent = nn.Linear(cfg.d_model, latent_dim)
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size) if cfg.vocab_size else None

    def forward(self, lip_offsets: torch.Tensor, n_audio_frames: int, audio_mask: Optional[torch.Tensor] = None):
        B, T = lip_offsets.shape[:2]
        h = self.inp(lip_offsets.reshape(B, T, -1) * self.cfg.input_scale)
        h = resample_features(h, n_audio_frames)
        h = h + sinusoidal_positions(n_audio_frames, h.shape[-1], h.device).to(h.dtype)
        pad = None if audio_mask is None else ~audio_mask
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        logits = self.ctc(h).log_softmax(-1) if self.ctc is not None else None
        return self.latent(h), logits
