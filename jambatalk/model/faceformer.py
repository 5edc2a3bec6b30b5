"""A FaceFormer-style autoregressive Transformer decoder: a baseline for JambaTalk's hybrid decoder.

Written for this library after FaceFormer's paper (Fan et al., CVPR 2022); it shares JambaTalk's audio
encoder, projection, losses and data, and replaces the decoder + vertex head:

* motion in: the previous frame's offsets (3V) -> Linear -> d_model; the first frame gets a learned
  start vector (FaceFormer uses the speaker-style embedding there);
* periodic positional encoding: sinusoidal encoding of ``t mod period`` (period = the frame rate);
* biased causal self-attention: frame i sees frames j <= i with an additive bias
  ``-slope_h * floor((i - j) / period)`` per head (ALiBi slopes);
* cross-attention to the audio features with FaceFormer's alignment mask: frame i sees only its own
  audio frame (``expansion`` widens it to i +- expansion); the audio is already resampled to the mesh
  frame rate by :class:`~jambatalk.model.JambaTalk`;
* post-norm layers with a ReLU feed-forward (PyTorch's TransformerDecoderLayer layout, as FaceFormer);
* a zero-initialised head d_model -> 3V, so training starts from the template (as JambaTalk's).

Training uses teacher forcing (the ground truth shifted by one frame); :meth:`FaceFormerDecoder.generate`
decodes one frame at a time, feeding back its own predictions. Like FaceFormer, it keeps no key/value
cache: each new frame re-runs the decoder over the whole prefix, so generating T frames costs O(T^2)
layer passes (O(T^3) attention work). Two deliberate differences from FaceFormer's code, both in the
baseline's favour or neutral: the head is applied to the newest frame only at each step (FaceFormer
re-applies it to the whole prefix), and the masks are built for any length (FaceFormer's are fixed at
600 frames).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError

__all__ = [
    "FaceFormerDecoder",
    "FaceFormerLayer",
    "alibi_slopes",
    "biased_causal_mask",
    "alignment_mask",
    "periodic_positional_encoding",
]


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes of a geometric sequence (ALiBi): 2^(-8/n), 2^(-16/n), ... for n a power of two;
    otherwise the slopes of the nearest lower power of two, then every other slope of the next one."""
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(p)
    if p < n_heads:
        slopes += power_of_two(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def biased_causal_mask(n_heads: int, length: int, period: int, device=None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """FaceFormer's biased causal mask (H, L, L), added to the attention scores.

    Entry (h, i, j) is ``-slope_h * floor((i - j) / period)`` for j <= i and -inf for j > i: a frame sees
    its past, and the penalty grows by one slope per elapsed period.
    """
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    pos = torch.arange(length, device=device)
    dist = pos[:, None] - pos[None, :]  # query minus key
    steps = torch.div(dist.clamp_min(0), period, rounding_mode="floor").to(dtype)
    bias = -alibi_slopes(n_heads).to(device=device, dtype=dtype)[:, None, None] * steps[None]
    return bias.masked_fill((dist < 0)[None], float("-inf"))


def alignment_mask(n_frames: int, n_audio: int, expansion: int = 0, device=None) -> torch.Tensor:
    """FaceFormer's audio-motion alignment (T, S) boolean mask, True where frame i may attend to audio
    frame j: |i - j| <= expansion (audio and motion at the same rate)."""
    i = torch.arange(n_frames, device=device)[:, None]
    j = torch.arange(n_audio, device=device)[None, :]
    return (j - i).abs() <= expansion


def periodic_positional_encoding(length: int, d_model: int, period: int, device=None,
                                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal positional encoding of ``t mod period`` (L, D): it repeats every ``period`` frames."""
    if d_model % 2:
        raise ValueError(f"d_model must be even for a sinusoidal encoding, got {d_model}")
    t = (torch.arange(length, device=device) % period).to(torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)
    return pe.to(dtype)


class _Attention(nn.Module):
    """Multi-head attention with an additive float or boolean mask (scaled dot-product attention)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        S = memory.shape[1]
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(memory).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(memory).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, D))


class FaceFormerLayer(nn.Module):
    """Post-norm decoder layer: biased causal self-attention, aligned cross-attention, ReLU feed-forward."""

    def __init__(self, d_model: int, n_heads: int, ff_ratio: int = 2, dropout: float = 0.1):
        super().__init__()
        self.self_attn = _Attention(d_model, n_heads, dropout)
        self.cross_attn = _Attention(d_model, n_heads, dropout)
        self.fc1 = nn.Linear(d_model, ff_ratio * d_model)
        self.fc2 = nn.Linear(ff_ratio * d_model, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor,
                cross_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x, x, self_mask)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory, cross_mask)))
        return self.norm3(x + self.drop(self.fc2(self.drop(F.relu(self.fc1(x))))))


class FaceFormerDecoder(nn.Module):
    """Autoregressive decoder with its own vertex head: audio features (B, T, D) -> offsets (B, T, 3V).

    Args:
        d_model: width (the audio features' width after JambaTalk's projection).
        n_vertices: V; outputs are flattened offsets (B, T, 3V).
        n_heads: attention heads (FaceFormer: 4).
        n_layers: decoder layers (FaceFormer: 1).
        period: period of the positional encoding and of the attention bias, in frames (FaceFormer: the fps).
        ff_ratio: feed-forward width / d_model (FaceFormer: 2).
        dropout: dropout on the positional encoding, attention and feed-forward (FaceFormer: 0.1).
        expansion: audio frames on each side a frame may attend to (FaceFormer: 0).
    """

    #: generate() precomputes the self-attention mask once when it holds at most this many entries
    mask_cache_entries = 1 << 26

    def __init__(self, d_model: int, n_vertices: int, *, n_heads: int = 4, n_layers: int = 1, period: int = 30,
                 ff_ratio: int = 2, dropout: float = 0.1, expansion: int = 0):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) < 1 or d_model % 2:
            raise ConfigError(f"FaceFormer decoder: d_model {d_model} is not an even multiple of n_heads {n_heads}",
                              "choose n_heads dividing an even d_model")
        if n_layers < 1 or period < 1 or expansion < 0:
            raise ConfigError(f"FaceFormer decoder: n_layers {n_layers}, period {period}, expansion {expansion}",
                              "use n_layers >= 1, period >= 1 (the frame rate) and expansion >= 0")
        self.d_model, self.n_vertices, self.n_heads = d_model, n_vertices, n_heads
        self.period, self.expansion = period, expansion
        self.motion_in = nn.Linear(3 * n_vertices, d_model)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.pe_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(FaceFormerLayer(d_model, n_heads, ff_ratio, dropout) for _ in range(n_layers))
        self.head = nn.Linear(d_model, 3 * n_vertices)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, cfg, n_vertices: int, fps: float, period: int = 0) -> FaceFormerDecoder:
        """Build from a :class:`~jambatalk.config.DecoderConfig`: one layer per schedule entry (each must be
        "attention"), its d_model, n_heads, mlp_ratio and dropout; ``period`` 0 means round(fps)."""
        bad = [k for k in cfg.schedule if k != "attention"]
        if bad:
            raise ConfigError(f"a FaceFormer decoder's schedule may only list 'attention' layers, not {bad}",
                              "write decoder.schedule: [attention] (one entry per layer)")
        return cls(cfg.d_model, n_vertices, n_heads=cfg.n_heads, n_layers=len(cfg.schedule),
                   period=int(period) or max(1, round(fps)), ff_ratio=cfg.mlp_ratio, dropout=cfg.dropout)

    # -- pieces --------------------------------------------------------------------------------
    def _check(self, x_audio: torch.Tensor, offsets: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        if x_audio.dim() != 3 or x_audio.shape[-1] != self.d_model:
            raise InputError(f"FaceFormer decoder: audio features of shape {tuple(x_audio.shape)}",
                             f"pass (batch, frames, {self.d_model})")
        if offsets is None:
            return None
        B, T = x_audio.shape[:2]
        if offsets.dim() == 4:
            offsets = offsets.reshape(offsets.shape[0], offsets.shape[1], -1)
        if tuple(offsets.shape) != (B, T, 3 * self.n_vertices):
            raise InputError(f"FaceFormer decoder: target offsets of shape {tuple(offsets.shape)} for audio features "
                             f"{tuple(x_audio.shape)}", f"pass ({B}, {T}, {3 * self.n_vertices}) offsets from the template")
        return offsets

    def shifted_inputs(self, offsets: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs (B, T, D): the start vector, then the embedded offsets of frames 0..T-2."""
        B = offsets.shape[0]
        start = self.start.to(offsets.dtype).expand(B, 1, -1)
        return torch.cat([start, self.motion_in(offsets[:, :-1])], dim=1)

    def decode(self, inputs: torch.Tensor, x_audio: torch.Tensor,
               self_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Motion inputs (B, L, D) and audio features (B, S, D) -> hidden states (B, L, D)."""
        L, S = inputs.shape[1], x_audio.shape[1]
        x = self.pe_dropout(inputs + periodic_positional_encoding(L, self.d_model, self.period, inputs.device,
                                                                  inputs.dtype))
        if self_mask is None:
            self_mask = biased_causal_mask(self.n_heads, L, self.period, inputs.device, inputs.dtype)
        cross = alignment_mask(L, S, self.expansion, inputs.device)
        for block in self.blocks:
            x = block(x, x_audio, self_mask, cross)
        return x

    # -- teacher forcing -----------------------------------------------------------------------
    def forward(self, x_audio: torch.Tensor, target_offsets: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher-forced offsets (B, T, 3V) given ground-truth offsets (B, T, 3V) (or (B, T, V, 3));
        without targets, the autoregressive :meth:`generate`. Frames outside ``key_padding_mask``
        (B, T, True at valid frames) are zero."""
        target_offsets = self._check(x_audio, target_offsets)
        if target_offsets is None:
            return self.generate(x_audio, key_padding_mask)
        out = self.head(self.decode(self.shifted_inputs(target_offsets.to(x_audio.dtype)), x_audio))
        if key_padding_mask is not None:
            out = out * key_padding_mask[:, :, None].to(out.dtype)
        return out

    # -- autoregressive inference --------------------------------------------------------------
    def next_frame(self, inputs: torch.Tensor, x_audio: torch.Tensor,
                   self_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One generation step: re-decode the prefix of motion inputs (B, L, D) and return the offsets of
        frame L-1 (B, 3V). This is the unit of cost of :meth:`generate` (no key/value cache)."""
        L = inputs.shape[1]
        audio = x_audio[:, : min(x_audio.shape[1], L + self.expansion)]  # later audio frames are masked anyway
        return self.head(self.decode(inputs, audio, self_mask)[:, -1])

    def generate(self, x_audio: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Autoregressive decoding (B, T, D) -> offsets (B, T, 3V), one frame at a time, each step feeding
        back the previous prediction and re-running the decoder over the whole prefix (FaceFormer's way).
        Equal to the teacher-forced :meth:`forward` given its own outputs as targets."""
        self._check(x_audio)
        B, T, _ = x_audio.shape
        mask = None
        if self.n_heads * T * T <= self.mask_cache_entries:
            mask = biased_causal_mask(self.n_heads, T, self.period, x_audio.device, x_audio.dtype)
        inputs = self.start.to(x_audio.dtype).expand(B, 1, -1)
        frames = []
        for t in range(T):
            y = self.next_frame(inputs, x_audio, None if mask is None else mask[:, : t + 1, : t + 1])
            frames.append(y)
            if t + 1 < T:
                inputs = torch.cat([inputs, self.motion_in(y)[:, None]], dim=1)
        out = torch.stack(frames, dim=1) if frames else x_audio.new_zeros(B, 0, 3 * self.n_vertices)
        if key_padding_mask is not None:
            out = out * key_padding_mask[:, :, None].to(out.dtype)
        return out
