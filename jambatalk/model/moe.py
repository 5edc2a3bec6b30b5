"""Mixture-of-experts feed-forward with top-k routing per token."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MoEConfig
from .blocks import kept_derived

__all__ = ["MoE", "load_balancing_loss"]


def load_balancing_loss(router_logits: torch.Tensor, top_k: int, token_mask: Optional[torch.Tensor] = None):
    """Switch-Transformer balancing loss: n * sum_i f_i * P_i over valid tokens.

    f_i is the fraction of routing assignments that go to expert i and P_i the mean router
    probability of expert i. It equals 1 for perfectly uniform routing and grows as routing
    concentrates. router_logits: (N, n_experts); token_mask: (N,) True where valid.
    """
    n = router_logits.shape[-1]
    probs = router_logits.float().softmax(-1)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, n).sum(-2).float()  # (N, n)
    if token_mask is not None:
        w = token_mask.float()[:, None]
        denom = w.sum().clamp_min(1.0)
        f = (chosen * w).sum(0) / (denom * top_k)
        p = (probs * w).sum(0) / denom
    else:
        f = chosen.mean(0) / top_k
        p = probs.mean(0)
    return n * (f * p).sum()


class MoE(nn.Module):
    """Top-k routed experts (each D -> ratio*D -> D). Deterministic: routing is argmax-based.

    Returns (y, balance_loss * balance_coef); the router logits of the last call are kept in
    ``self.last_router_logits`` for inspection.
    """

    def __init__(self, d_model: int, cfg: MoEConfig, dropout: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(d_model, cfg.n_experts, bias=False)
        hidden = cfg.hidden_ratio * d_model
        self.w1 = nn.Parameter(torch.empty(cfg.n_experts, d_model, hidden))
        self.b1 = nn.Parameter(torch.zeros(cfg.n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(cfg.n_experts, hidden, d_model))
        self.b2 = nn.Parameter(torch.zeros(cfg.n_experts, d_model))
        for w in (self.w1, self.w2):
            bound = 1.0 / w.shape[1] ** 0.5
            nn.init.uniform_(w, -bound, bound)
        self.dropout = nn.Dropout(dropout)
        self.last_router_logits: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.router(flat)
        self.last_router_logits = logits.detach()
        if self.cfg.top_k >= self.cfg.n_experts:  # every token visits every expert: no routing to do
            weights = logits.softmax(-1).to(x.dtype)
            if self.training and self.dropout.p > 0:
                out = sum(self._expert(e, flat) * weights[:, e, None] for e in range(self.cfg.n_experts))
            else:
                out = self._all_experts(flat, weights)
            return out.reshape(shape), self._balance(logits, token_mask)
        weights, experts = logits.topk(self.cfg.top_k, dim=-1)
        weights = weights.softmax(-1).to(x.dtype)
        out = torch.zeros_like(flat)
        for e in range(self.cfg.n_experts):
            token, slot = (experts == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            out.index_add_(0, token, self._expert(e, flat[token]) * weights[token, slot, None])
        return out.reshape(shape), self._balance(logits, token_mask)

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s feed-forward on tokens (N, D) -> (N, D)."""
        h = F.gelu(torch.addmm(self.b1[e], x, self.w1[e]))
        return torch.addmm(self.b2[e], self.dropout(h), self.w2[e])

    def _all_experts(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_e weights[:, e] * expert_e(x) without dropout, as two matrix products over the experts side
        by side (fewer, larger products than one pair per expert): (N, D), (N, n_experts) -> (N, D)."""
        n_experts, d_model, hidden = self.w1.shape
        h = torch.addmm(self.b1.reshape(-1), x, self._w1_side_by_side())
        if torch.is_grad_enabled():
            h = (F.gelu(h).view(-1, n_experts, hidden) * weights[:, :, None]).view(-1, n_experts * hidden)
        else:  # inference: the activation and the weighting in place, no new buffers
            torch.ops.aten.gelu_(h)
            h.view(-1, n_experts, hidden).mul_(weights[:, :, None])
        return torch.addmm(weights @ self.b2, h, self.w2.reshape(n_experts * hidden, d_model))

    def _w1_side_by_side(self) -> torch.Tensor:
        """The experts' first weights side by side, (D, n_experts * hidden): a copy, kept between calls while no
        gradient is wanted until w1 changes (:func:`~jambatalk.model.blocks.kept_derived`)."""
        n_experts, d_model, hidden = self.w1.shape
        w1 = self.w1
        return kept_derived(self, "_w1_kept", (w1,),
                            lambda: w1.permute(1, 0, 2).reshape(d_model, n_experts * hidden))

    def _balance(self, logits: torch.Tensor, token_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The weighted load-balancing loss while training, else None."""
        if not (self.training and self.cfg.balance_coef > 0):
            return None
        mask = None if token_mask is None else token_mask.reshape(-1)
        return self.cfg.balance_coef * load_balancing_loss(logits, self.cfg.top_k, mask)
