"""Shared building blocks: RMSNorm, MLP, the pre-norm residual Block(mixer, ffn), and weights derived once
for inference (:func:`kept_derived`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "MLP", "Block", "BlockCache", "kept_derived"]


def kept_derived(module: nn.Module, slot: str, names: tuple[str, ...], make: Callable[..., Any]) -> Any:
    """``make(*params)``, a value derived from the parameters ``names`` of ``module`` (its own, "A_log", or a
    direct submodule's, "conv1d.weight"; one registered as None, such as a Linear's absent bias, is passed as
    None) in another layout, kept on ``module`` under ``slot`` between calls while no gradient is wanted and
    made again when a parameter has changed: written in place (its version counter moved), replaced or moved
    (its storage changed). Made on every call while gradients are wanted (a kept copy is detached) or for
    parameters made under inference_mode (they have no version counter).

    It runs on every inference call of the layers that use it, so the parameters are read from the modules'
    own tables rather than through ``nn.Module.__getattr__`` (seven lookups that way took 6 us)."""
    params = tuple((module._modules[owner] if owner else module)._parameters[leaf] for owner, leaf in _split(names))
    if torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params):
        return make(*params)
    try:
        key = [(p.data_ptr(), p._version) for p in params if p is not None]
    except RuntimeError:  # an inference tensor: no version counter
        return make(*params)
    kept = module.__dict__.get(slot)
    if kept is None or kept[0] != key:
        kept = (key, make(*params))
        module.__dict__[slot] = kept
    return kept[1]


@functools.cache
def _split(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """("A_log", "conv1d.weight") -> (("", "A_log"), ("conv1d", "weight"))."""
    split = tuple(name.rpartition(".")[::2] for name in names)
    if any("." in owner for owner, _ in split):
        raise ValueError(f"kept_derived reads a module's parameters and its direct submodules', not {names}")
    return split


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(dtype)


class MLP(nn.Module):
    """Position-wise feed-forward D -> ratio*D -> D with GELU. Returns (y, None) like the MoE."""

    def __init__(self, d_model: int, ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ratio * d_model)
        self.fc2 = nn.Linear(ratio * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None):
        return self.fc2(self.dropout(F.gelu(self.fc1(x)))), None


@dataclass
class BlockCache:
    """Streaming state of one block: its mixer's cache and the inputs still awaiting mixer output."""

    mixer: Any
    pending: Optional[torch.Tensor] = None  # (B, n, D) residual inputs whose mixer output is delayed


class Block(nn.Module):
    """x = x + mixer(norm(x)); x = x + ffn(norm(x)) -- one decoder layer of any kind.

    The mixer (Mamba or attention) follows the project's mixer contract: ``forward(x, key_padding_mask)``,
    ``allocate_cache(batch_size, device, dtype)``, ``step(x, cache)`` returning the outputs that are
    final so far (attention with a lookahead returns them with a delay), and ``flush(cache)`` for the
    rest at the end of a stream.
    """

    def __init__(self, kind: str, mixer: nn.Module, ffn: nn.Module, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        self.norm1 = RMSNorm(d_model)
        self.mixer = mixer
        self.norm2 = RMSNorm(d_model)
        self.ffn = ffn
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None):
        x = x + self.dropout(self.mixer(self.norm1(x), key_padding_mask=key_padding_mask))
        y, aux = self.ffn(self.norm2(x), key_padding_mask)
        return x + self.dropout(y), aux

    # -- streaming -----------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> BlockCache:
        return BlockCache(mixer=self.mixer.allocate_cache(batch_size, device=device, dtype=dtype))

    def _finish(self, x_in: torch.Tensor, mixed: torch.Tensor, cache: BlockCache) -> torch.Tensor:
        pending = x_in if cache.pending is None else torch.cat([cache.pending, x_in], dim=1)
        n = mixed.shape[1]
        h = pending[:, :n] + mixed
        cache.pending = pending[:, n:]
        y, _ = self.ffn(self.norm2(h))
        return h + y

    def step(self, x: torch.Tensor, cache: BlockCache) -> torch.Tensor:
        """Feed a chunk (B, l, D); returns the outputs that became final (B, m, D), m <= l + pending."""
        if x.shape[1] == 0:
            mixed = x
        else:
            mixed = self.mixer.step(self.norm1(x), cache.mixer)
        return self._finish(x, mixed, cache)

    def flush(self, cache: BlockCache) -> torch.Tensor:
        """At the end of a stream: the outputs still held back (attention lookahead)."""
        if cache.pending is None or cache.pending.shape[1] == 0 or not hasattr(self.mixer, "flush"):
            return None
        mixed = self.mixer.flush(cache.mixer)
        return self._finish(cache.pending[:, :0], mixed, cache)
