"""The hybrid Jamba decoder: a schedule of layer kinds, each a fresh Block(mixer, ffn)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..config import DecoderConfig
from .blocks import MLP, Block, RMSNorm

__all__ = ["JambaDecoder", "LAYER_BUILDERS", "build_block"]


def _mamba(cfg: DecoderConfig) -> nn.Module:
    from .mamba import MambaMixer

    return MambaMixer(cfg)


def _attention(cfg: DecoderConfig) -> nn.Module:
    from .attention import GQAttention

    return GQAttention(cfg)


def _mlp(cfg: DecoderConfig) -> nn.Module:
    return MLP(cfg.d_model, cfg.mlp_ratio, cfg.dropout)


def _moe(cfg: DecoderConfig) -> nn.Module:
    from .moe import MoE

    return MoE(cfg.d_model, cfg.moe, cfg.dropout, use_kernels=cfg.use_kernels)


#: layer kind -> (mixer builder, feed-forward builder)
LAYER_BUILDERS: dict[str, tuple[Callable, Callable]] = {
    "mamba": (_mamba, _mlp),
    "moe_mamba": (_mamba, _moe),
    "attention": (_attention, _mlp),
    "moe_attention": (_attention, _moe),
}


def build_block(kind: str, cfg: DecoderConfig) -> Block:
    mixer, ffn = LAYER_BUILDERS[kind]
    return Block(kind, mixer(cfg), ffn(cfg), cfg.d_model, cfg.dropout)


class JambaDecoder(nn.Module):
    """Stack of blocks built from ``cfg.schedule`` (e.g. mamba, moe_mamba, attention, ...), then RMSNorm.

    ``forward`` returns (hidden (B, L, D), aux_loss) where aux_loss sums the MoE balancing terms
    (a zero tensor when there are none, e.g. at eval).
    """

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(build_block(kind, cfg) for kind in cfg.schedule)
        self.norm = RMSNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None):
        aux_total = x.new_zeros(())
        for layer in self.layers:
            x, aux = layer(x, key_padding_mask)
            if aux is not None:
                aux_total = aux_total + aux
        return self.norm(x), aux_total

    @torch.no_grad()
    def forward_long(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """Inference over a long sequence in bounded memory: each Mamba block runs over it in chunks of
        ``chunk`` frames, carrying its state (the same result as one pass); attention blocks run in one
        call (windowed attention works in query blocks). Returns the normed hidden states (B, L, D)."""
        for layer in self.layers:
            if hasattr(layer.mixer, "span"):
                x, _ = layer(x, None)
                continue
            cache = layer.allocate_cache(x.shape[0], device=x.device, dtype=x.dtype)
            x = torch.cat([layer.step(x[:, s: s + chunk], cache) for s in range(0, x.shape[1], chunk)], dim=1)
        return self.norm(x)

    # -- streaming -----------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> list:
        return [layer.allocate_cache(batch_size, device=device, dtype=dtype) for layer in self.layers]

    @property
    def delay(self) -> int:
        """Frames by which step() outputs lag its inputs (the sum of attention lookaheads)."""
        return sum(getattr(layer.mixer, "delay", 0) for layer in self.layers)

    def step(self, x: torch.Tensor, cache: list) -> torch.Tensor:
        """Feed a chunk (B, l, D); returns the frames that became final (B, m, D)."""
        for layer, c in zip(self.layers, cache):
            x = layer.step(x, c)
        return self.norm(x)

    def flush(self, cache: list, like: torch.Tensor) -> torch.Tensor:
        """End of stream: push out every frame still held back by a lookahead."""
        x = like[:, :0]
        for layer, c in zip(self.layers, cache):
            x = layer.step(x, c)
            rest = layer.flush(c)
            if rest is not None:
                x = torch.cat([x, rest], dim=1)
        return self.norm(x)
