"""Grouped-query self-attention with LRL-RoPE and configurable span.

Spans: "bidirectional" (every frame sees the whole sequence; the paper's offline default),
"causal" (past and present), "window" (``window`` past frames and ``lookahead`` future frames).
The rotary embedding is applied per head, on head_dim; positions carry an absolute offset so that
chunked (streaming) inference rotates exactly as the one-pass forward.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DecoderConfig

#: frames within which bidirectional attention attends on long sequences (0: everywhere), set for the calls of
#: one thread by :meth:`JambaTalk.long_context`: a setting on the shared layers leaked into other threads' calls
LONG_WINDOW: contextvars.ContextVar[int] = contextvars.ContextVar("jambatalk_long_window", default=0)

__all__ = ["LRLRoPE", "GQAttention", "AttentionCache", "span_mask", "span_bias"]

#: scaled_dot_product_attention takes grouped K/V itself (``enable_gqa``) from torch 2.5 on; before, K and V
#: are repeated to every query head first
SDPA_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


class LRLRoPE(nn.Module):
    """Low-Rank Learned Rotary Positional Embedding.

    With a = p * theta (theta_i = base^(-2i/d)), e = [sin a ; cos a] and delta = W2(W1(e)) (rank r,
    no bias), pairs (x_2i, x_2i+1) are rotated by s = sin a + delta_sin, c = cos a + delta_cos.
    W2 starts at zero, so training starts from the exact rotary embedding. ``learned=False`` gives
    plain RoPE.
    """

    def __init__(self, dim: int, rank: int = 16, base: float = 10000.0, learned: bool = True):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary width {dim} must be even")
        self.dim = dim
        self.register_buffer("theta", base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim), persistent=False)
        self.learned = learned
        if learned:
            self.w1 = nn.Linear(dim, rank, bias=False)
            self.w2 = nn.Linear(rank, dim, bias=False)
            nn.init.zeros_(self.w2.weight)

    def sin_cos(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (L,) -> s, c each (L, dim/2)."""
        a = positions.float()[:, None] * self.theta[None, :]
        sin, cos = a.sin(), a.cos()
        if self.learned:
            delta = self.w2(self.w1(torch.cat([sin, cos], dim=-1)))
            half = self.dim // 2
            sin, cos = sin + delta[:, :half], cos + delta[:, half:]
        return sin, cos

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x (..., L, dim) at absolute positions (L,)."""
        return self.rotate(x, *self.sin_cos(positions))

    @staticmethod
    def rotate(x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Rotate the pairs (x_2i, x_2i+1) of x (..., L, dim) by s, c (L, dim/2) from :meth:`sin_cos`.

        For float32 and float64 the pairs are read as complex numbers and rotated by one complex product,
        x_2i + i x_2i+1 times c + i s (7x faster on CPU than the pairwise formula, whose six elementwise
        products and a stack the other dtypes run)."""
        if x.dtype in (torch.float32, torch.float64) and _pairs_are_complex(x):
            z = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
            return torch.view_as_real(z * torch.complex(c.to(x.dtype), s.to(x.dtype))).flatten(-2)
        s, c = s.to(x.dtype), c.to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


def _pairs_are_complex(x: torch.Tensor) -> bool:
    """Whether view_as_complex can read x's last axis as pairs in place (unit stride, even strides and
    offset elsewhere)."""
    return x.stride(-1) == 1 and x.storage_offset() % 2 == 0 and all(st % 2 == 0 for st in x.stride()[:-1])


def span_mask(q_start: int, n_q: int, k_start: int, n_k: int, span: str, window: int = 0, lookahead: int = 0,
              device=None) -> Optional[torch.Tensor]:
    """Boolean (n_q, n_k) mask, True where the query at position q_start + i may attend to the key at
    k_start + j; None where every query sees every key ("bidirectional").

    Built as a band of a ones matrix (triu/tril): several times faster than comparing position grids."""
    if span == "bidirectional":
        return None
    shift = k_start - q_start  # key minus query position = j - i + shift
    ones = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if span == "causal":
        return ones.tril_(-shift)
    return ones.triu_(-window - shift).tril_(lookahead - shift)


#: additive span masks of at most this many entries are kept between calls (32 of them: <= 32 MB in float32)
KEPT_BIAS_MAX = 1 << 18


def _make_span_bias(n_q: int, n_k: int, shift: int, span: str, window: int, lookahead: int, dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    allowed = span_mask(0, n_q, shift, n_k, span, window, lookahead, device)
    return torch.zeros(n_q, n_k, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))


_kept_span_bias = functools.lru_cache(maxsize=32)(_make_span_bias)


def span_bias(q_start: int, n_q: int, k_start: int, n_k: int, span: str, window: int, lookahead: int,
              like: torch.Tensor) -> Optional[torch.Tensor]:
    """:func:`span_mask` as an additive mask (0 where allowed, -inf elsewhere) in ``like``'s dtype and device,
    for scaled_dot_product_attention, which runs faster on CPU with it than with a boolean mask (it converts
    those on every call). Masks depend on the positions' difference only and are kept between calls (the
    query blocks of a long sequence share one; up to :data:`KEPT_BIAS_MAX` entries). Do not write to the
    result."""
    if span == "bidirectional":
        return None
    make = _kept_span_bias if n_q * n_k <= KEPT_BIAS_MAX else _make_span_bias
    return make(n_q, n_k, k_start - q_start, span, window, lookahead, like.dtype, like.device)


@dataclass
class AttentionCache:
    k: torch.Tensor  # (B, Hkv, n, hd) keys of positions k_start .. k_start+n-1
    v: torch.Tensor
    q: torch.Tensor  # (B, H, m, hd) queries not answered yet, positions q_start ..
    k_start: int = 0
    q_start: int = 0
    next_pos: int = 0


class GQAttention(nn.Module):
    """Multi-head self-attention whose K/V have ``n_kv_heads`` heads shared by groups of query heads."""

    #: queries per block when a windowed span runs over a longer sequence: memory stays bounded and the
    #: keys outside every block's reach are never scored (at 1800 frames and a 93-frame span 128 takes
    #: 0.45x the time of one 1024 block, at 300 frames 0.9x; 64 and 256 are slower than 128)
    query_block = 128

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.span, self.window, self.lookahead = cfg.attention_span, cfg.window, cfg.lookahead
        d = cfg.d_model
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.rope = (None if cfg.rope == "none"
                     else LRLRoPE(self.head_dim, cfg.rope_rank, cfg.rope_base, learned=cfg.rope == "lrl"))
        self.dropout = cfg.dropout

    # -- projections ---------------------------------------------------------------------------
    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope is not None:
            s, c = self.rope.sin_cos(positions)  # once for q and k
            q, k = self.rope.rotate(q, s, c), self.rope.rotate(k, s, c)
        return q, k, v

    def _attend(self, q, k, v, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """q (B,H,Lq,hd), k/v (B,Hkv,Lk,hd), mask broadcastable to (B,H,Lq,Lk) -> (B, Lq, H*hd)."""
        groups = self.n_heads // self.n_kv_heads
        gqa = {}
        if groups > 1 and SDPA_GQA:
            gqa = {"enable_gqa": True}
        elif groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, **gqa)
        B, H, Lq, hd = out.shape
        return out.transpose(1, 2).reshape(B, Lq, H * hd)

    @staticmethod
    def _mask(q_start: int, n_q: int, k_start: int, n_k: int, span: str, window: int, lookahead: int,
              key_valid: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
        """The attention mask of queries q_start.. against keys k_start..: the span's kept additive mask
        (1, 1, n_q, n_k), or with ``key_valid`` (B, n_k) a boolean (B, 1, n_q, n_k); None when every key
        is seen."""
        if key_valid is None:
            bias = span_bias(q_start, n_q, k_start, n_k, span, window, lookahead, like)
            return None if bias is None else bias[None, None]
        m = key_valid[:, None, None, :]
        allowed = span_mask(q_start, n_q, k_start, n_k, span, window, lookahead, like.device)
        m = m if allowed is None else (m & allowed[None, None])
        # every query sees at least its own key: a padded frame whose whole span is padding would otherwise have
        # no key at all, a row that CUDA's memory-efficient attention (torch < 2.5) turned into NaN, which reached
        # the real frames through 0 * NaN; valid frames see their own key anyway, and padded ones are not scored
        own = (torch.arange(q_start, q_start + n_q, device=like.device)[:, None]
               == torch.arange(k_start, k_start + n_k, device=like.device)[None, :])
        return m | own[None, None]

    # -- one pass ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None, pos_offset: int = 0):
        """x (B, L, D); key_padding_mask (B, L) True at valid frames.

        Within :meth:`JambaTalk.long_context` (:data:`LONG_WINDOW` > 0), a bidirectional layer given a
        sequence longer than twice that many frames attends within +-LONG_WINDOW frames (bounded memory and
        linear time on long audio); shorter sequences are unaffected.
        """
        B, L, _ = x.shape
        span, window, lookahead = self.span, self.window, self.lookahead
        long_window = LONG_WINDOW.get()
        if span == "bidirectional" and long_window and L > 2 * long_window + 1:
            span, window, lookahead = "window", long_window, long_window
        pos = torch.arange(pos_offset, pos_offset + L, device=x.device)
        q, k, v = self._qkv(x, pos)
        if span == "window" and L > self.query_block:
            outs = []
            for s in range(0, L, self.query_block):
                e = min(L, s + self.query_block)
                ks, ke = max(0, s - window), min(L, e + lookahead)
                mask = self._mask(s, e - s, ks, ke - ks, span, window, lookahead,
                                  None if key_padding_mask is None else key_padding_mask[:, ks:ke], q)
                outs.append(self._attend(q[:, :, s:e], k[:, :, ks:ke], v[:, :, ks:ke], mask))
            return self.o_proj(torch.cat(outs, dim=1))
        mask = self._mask(0, L, 0, L, span, window, lookahead, key_padding_mask, q)
        return self.o_proj(self._attend(q, k, v, mask))

    # -- streaming -----------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> AttentionCache:
        if self.span == "bidirectional":
            from ..errors import ConfigError

            raise ConfigError("bidirectional attention sees the whole future and cannot run step by step",
                              "use a model with decoder.attention_span 'causal' or 'window' for streaming")
        dtype = dtype or self.q_proj.weight.dtype
        empty = torch.zeros(batch_size, self.n_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        q = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        return AttentionCache(k=empty, v=empty.clone(), q=q)

    @property
    def delay(self) -> int:
        """Frames by which step() outputs lag its inputs."""
        return self.lookahead if self.span == "window" else 0

    def _emit(self, cache: AttentionCache, n: int) -> torch.Tensor:
        B = cache.q.shape[0]
        if n == 0:
            return cache.q.new_zeros(B, 0, self.o_proj.out_features)
        q = cache.q[:, :, :n]
        mask = self._mask(cache.q_start, n, cache.k_start, cache.k.shape[2], self.span, self.window, self.lookahead,
                          None, q)
        out = self.o_proj(self._attend(q, cache.k, cache.v, mask))
        cache.q = cache.q[:, :, n:]
        cache.q_start += n
        if self.span == "window":  # keys older than the oldest pending query's window are never needed
            drop = max(0, (cache.q_start - self.window) - cache.k_start)
            if drop:
                cache.k, cache.v = cache.k[:, :, drop:], cache.v[:, :, drop:]
                cache.k_start += drop
        return out

    def step(self, x: torch.Tensor, cache: AttentionCache) -> torch.Tensor:
        """Feed frames (B, l, D); returns the outputs whose lookahead is complete (B, m, D)."""
        L = x.shape[1]
        pos = torch.arange(cache.next_pos, cache.next_pos + L, device=x.device)
        q, k, v = self._qkv(x, pos)
        cache.k, cache.v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
        cache.q = torch.cat([cache.q, q], dim=2)
        cache.next_pos += L
        ready = max(0, (cache.next_pos - 1 - self.delay) - cache.q_start + 1)
        return self._emit(cache, min(ready, cache.q.shape[2]))

    def flush(self, cache: AttentionCache) -> torch.Tensor:
        """End of stream: answer the queries still waiting for a lookahead that will never come."""
        return self._emit(cache, cache.q.shape[2])
