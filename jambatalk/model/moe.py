"""Mixture-of-experts feed-forward with top-k routing per token."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MoEConfig
from ..ops import cpu_scan
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


class MoEInferenceWeights(NamedTuple):
    """:meth:`MoE._every_expert_inference`'s weights: bias_in (E*H + E,), w_in (D, E*H + E), w_out (E*H + E, D)."""

    bias_in: torch.Tensor
    w_in: torch.Tensor
    w_out: torch.Tensor
    n_experts: int
    hidden: int


def _inference_layout(w1, b1, router, w2, b2) -> MoEInferenceWeights:
    n_experts, d_model, hidden = w1.shape
    with torch.no_grad():
        w_in = torch.cat([w1.permute(1, 0, 2).reshape(d_model, n_experts * hidden), router.t()], dim=1)
        bias_in = torch.cat([b1.reshape(-1), b1.new_zeros(n_experts)])
        w_out = torch.cat([w2.reshape(n_experts * hidden, d_model), b2], dim=0)
    return MoEInferenceWeights(bias_in, w_in.contiguous(), w_out, n_experts, hidden)


class MoE(nn.Module):
    """Top-k routed experts (each D -> ratio*D -> D). Deterministic: routing is argmax-based. top_k 1 is
    Switch routing (:meth:`route`); with top_k = n_experts every token visits every expert.

    Returns (y, balance_loss * balance_coef); the router logits of the last call are kept in
    ``self.last_router_logits`` for inspection.
    """

    def __init__(self, d_model: int, cfg: MoEConfig, dropout: float = 0.0, use_kernels: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.use_kernels = use_kernels  # "auto": the compiled gate on CPU where it builds (jambatalk.ops.cpu_scan)
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
        every_expert = self.cfg.top_k >= self.cfg.n_experts  # every token visits every expert: no routing to do
        dropout = self.training and self.dropout.p > 0
        if every_expert and not dropout and not torch.is_grad_enabled():
            out, logits = self._every_expert_inference(flat)
            self.__dict__["last_router_logits"] = logits  # a plain attribute: no nn.Module.__setattr__ lookups
            return out.reshape(shape), self._balance(logits, token_mask)
        logits = self.router(flat)
        self.last_router_logits = logits.detach()
        if self.cfg.top_k == 1 and not dropout and not torch.is_grad_enabled():
            return self._switch_inference(flat, logits).reshape(shape), self._balance(logits, token_mask)
        if every_expert:
            weights = logits.softmax(-1).to(x.dtype)
            if dropout:
                out = sum(self._expert(e, flat) * weights[:, e, None] for e in range(self.cfg.n_experts))
            else:
                out = self._all_experts(flat, weights)
            return out.reshape(shape), self._balance(logits, token_mask)
        weights, experts = self.route(logits)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(flat)
        for e in range(self.cfg.n_experts):
            token, slot = (experts == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            out.index_add_(0, token, (self._expert(e, flat[token]) * weights[token, slot, None]).to(out.dtype))
        return out.reshape(shape), self._balance(logits, token_mask)

    def _switch_inference(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Top-1 routing without gradients: each expert's tokens gathered, run and written back once, scaled
        in place by their routing probability. (N, D), (N, n_experts) -> (N, D)."""
        prob, expert = (t.squeeze(1) for t in self.route(logits))
        out = torch.empty_like(x)
        for e in range(self.cfg.n_experts):
            token = (expert == e).nonzero().squeeze(1)
            if token.numel():
                y = self._expert(e, x.index_select(0, token), in_place=True)
                out.index_copy_(0, token, y.mul_(prob.index_select(0, token).unsqueeze(1)).to(out.dtype))
        return out

    def route(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits (N, n_experts) -> (weights (N, top_k), experts (N, top_k)) for top_k < n_experts.

        top_k 1 routes as the Switch Transformer (and MoE-Mamba): the chosen expert's output is scaled
        by its softmax probability over all experts, through which the router learns (renormalised over
        one expert the weight would be 1, with no gradient). top_k >= 2: the softmax over the chosen
        experts' logits (Mixtral)."""
        if self.cfg.top_k == 1:
            return logits.softmax(-1).max(-1, keepdim=True)
        weights, experts = logits.topk(self.cfg.top_k, dim=-1)
        return weights.softmax(-1), experts

    def _expert(self, e: int, x: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Expert ``e``'s feed-forward on tokens (N, D) -> (N, D); ``in_place`` (no gradient wanted): GELU
        overwrites the hidden layer."""
        h = torch.addmm(self.b1[e], x, self.w1[e])
        h = torch.ops.aten.gelu_(h) if in_place else F.gelu(h)
        return torch.addmm(self.b2[e], self.dropout(h), self.w2[e])

    def _all_experts(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_e weights[:, e] * expert_e(x) without dropout, as two matrix products over the experts side
        by side (fewer, larger products than one pair per expert): (N, D), (N, n_experts) -> (N, D)."""
        n_experts, d_model, hidden = self.w1.shape
        h = torch.addmm(self.b1.reshape(-1), x, self.w1.permute(1, 0, 2).reshape(d_model, n_experts * hidden))
        h = (F.gelu(h).view(-1, n_experts, hidden) * weights[:, :, None]).view(-1, n_experts * hidden)
        return torch.addmm(weights @ self.b2, h, self.w2.reshape(n_experts * hidden, d_model))

    def _every_expert_inference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_all_experts` with its router, without gradients, in two matrix products and in place:
        (N, D) -> (output (N, D), router logits (N, n_experts)).

        The first product gives every expert's hidden layer and the router's logits side by side,
        [h_1 .. h_E | logits]; the logits become the routing weights w in place and each h_e is scaled by
        w_e, so that the second product of [w_1 h_1 .. w_E h_E | w] with [W2_1; ..; W2_E; b2] is the
        weighted sum of the experts' outputs, their biases included. On CPU the gate between the products
        runs in one compiled pass (:func:`~jambatalk.ops.cpu_scan.moe_gate`) where it builds."""
        weights = self._inference_weights()
        both = torch.addmm(weights.bias_in, x, weights.w_in)  # (N, E * hidden + E)
        if self._compiled_gate_applies(both):
            logits = cpu_scan.moe_gate_prepared(both, weights.n_experts, weights.hidden)
        else:
            logits = cpu_scan.moe_gate_reference(both, weights.n_experts, weights.hidden)[1]
        return both @ weights.w_out, logits

    def _compiled_gate_applies(self, both: torch.Tensor) -> bool:
        """Whether the gate may run compiled: ``use_kernels="auto"``, float32 CPU rows and the library built."""
        if self.use_kernels != "auto" or both.device.type != "cpu" or both.dtype != torch.float32:
            return False
        return self.cfg.n_experts <= cpu_scan.MAX_EXPERTS and cpu_scan.available()

    def _inference_weights(self) -> MoEInferenceWeights:
        """:meth:`_every_expert_inference`'s weights, made once and kept until a parameter changes
        (:func:`~jambatalk.model.blocks.kept_derived`)."""
        return kept_derived(self, "_inference_kept", ("w1", "b1", "router.weight", "w2", "b2"), _inference_layout)

    def _balance(self, logits: torch.Tensor, token_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The weighted load-balancing loss while training, else None."""
        if not (self.training and self.cfg.balance_coef > 0):
            return None
        mask = None if token_mask is None else token_mask.reshape(-1)
        return self.cfg.balance_coef * load_balancing_loss(logits, self.cfg.top_k, mask)
