"""Mixture of experts: deterministic routing and the balancing loss."""

import pytest
import torch

from jambatalk.config import MoEConfig
from jambatalk.model.moe import MoE, load_balancing_loss


def test_moe_is_deterministic_at_eval():
    torch.manual_seed(0)
    moe = MoE(16, MoEConfig(n_experts=4, top_k=2)).eval()
    x = torch.randn(3, 10, 16)
    a, aux = moe(x)
    b, _ = moe(x)
    assert torch.equal(a, b)
    assert aux is None  # no balancing term outside training


@pytest.mark.parametrize("top_k", [1, 2, 3], ids=["top1", "top2", "all-experts"])
def test_moe_top_k_equals_dense_mixture_of_selected_experts(top_k):
    """Routed (top_k < n_experts) and unrouted (every expert) paths both give the weighted mixture: top-1
    scales the chosen expert by its probability over all experts (Switch), top-2 renormalises over the two."""
    torch.manual_seed(0)
    moe = MoE(8, MoEConfig(n_experts=3, top_k=top_k)).eval()
    x = torch.randn(5, 8)
    y, _ = moe(x)
    logits = moe.router(x)
    w, idx = logits.topk(top_k, -1)
    w = logits.softmax(-1).gather(-1, idx) if top_k == 1 else w.softmax(-1)
    assert top_k != 1 or bool((w < 0.99).all())  # the probability, not a renormalised 1
    for t in range(5):
        ref = 0
        for j in range(top_k):
            e = idx[t, j]
            h = torch.nn.functional.gelu(x[t] @ moe.w1[e] + moe.b1[e])
            ref = ref + w[t, j] * (h @ moe.w2[e] + moe.b2[e])
        torch.testing.assert_close(y[t], ref, rtol=1e-5, atol=1e-6)


def test_balancing_loss_is_smallest_for_uniform_routing():
    n, tokens = 4, 400
    uniform = torch.zeros(tokens, n)
    uniform[torch.arange(tokens), torch.arange(tokens) % n] = 0.01  # top-1 spread evenly
    skewed = torch.zeros(tokens, n)
    skewed[:, 0] = 3.0
    half = torch.zeros(tokens, n)
    half[: tokens // 2, 0] = 3.0
    half[tokens // 2:, 1] = 3.0
    lu, lh, ls = (load_balancing_loss(x, 1) for x in (uniform, half, skewed))
    assert abs(float(lu) - 1.0) < 1e-2
    assert float(lu) < float(lh) < float(ls)


def test_balancing_loss_ignores_padded_tokens():
    logits = torch.zeros(10, 2)
    logits[:5, 0] = 1.0
    logits[5:, 1] = 1.0
    mask = torch.tensor([True] * 5 + [False] * 5)
    assert float(load_balancing_loss(logits, 1, mask)) > float(load_balancing_loss(logits, 1))


def test_moe_training_returns_scaled_balancing_loss_with_gradient():
    moe = MoE(8, MoEConfig(n_experts=2, top_k=1, balance_coef=0.5)).train()
    y, aux = moe(torch.randn(2, 6, 8))
    assert aux is not None and aux.requires_grad
    aux.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_every_expert_path_without_dropout_keeps_outputs_and_gradients():
    """With every expert active and no dropout the experts run side by side as two matrix products; the
    outputs and every parameter's gradient equal the one-expert-at-a-time sum."""
    torch.manual_seed(2)
    moe = MoE(8, MoEConfig(n_experts=3, top_k=3), dropout=0.0).train()
    x = torch.randn(2, 7, 8)
    y, _ = moe(x)
    flat = x.reshape(-1, 8)
    w = moe.router(flat).softmax(-1)
    ref = sum(moe._expert(e, flat) * w[:, e, None] for e in range(3)).reshape(x.shape)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(y.square().sum(), list(moe.parameters()))
    grads_ref = torch.autograd.grad(ref.square().sum(), list(moe.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_every_expert_path_at_inference_follows_the_weights():
    """Inference keeps its weights (router and experts side by side, biases folded in) between calls and
    works in place: the output is the one-expert-at-a-time sum and the router logits are the router's, also
    after each parameter in turn is written in place or replaced."""
    torch.manual_seed(3)
    moe = MoE(8, MoEConfig(n_experts=3, top_k=3), dropout=0.0).eval()
    for p in (moe.b1, moe.b2):
        torch.nn.init.normal_(p)
    x = torch.randn(2, 9, 8)
    flat = x.reshape(-1, 8)

    def check():
        y = moe(x)[0]
        with torch.no_grad():
            logits = moe.router(flat)
            w = logits.softmax(-1)
            ref = sum(moe._expert(e, flat) * w[:, e, None] for e in range(3)).reshape(x.shape)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(moe.last_router_logits, logits)

    with torch.no_grad():
        check()
        kept = moe._inference_weights()
        assert moe._inference_weights() is kept
        for name in ("w1", "b1", "w2", "b2"):
            getattr(moe, name).mul_(-0.5)  # in place, as load_state_dict or an optimiser step
            check()
        moe.router.weight.add_(1.0)
        check()
        moe.w2 = torch.nn.Parameter(torch.randn_like(moe.w2))
        check()
    with torch.inference_mode():
        check()


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_switch_routing_sends_each_token_to_one_expert_and_trains_the_router(grad):
    """Top-1 of 4 experts: every token's output is its chosen expert's times that expert's probability, also
    when some experts get no token; the task loss alone (no balancing term) reaches the router."""
    torch.manual_seed(4)
    moe = MoE(8, MoEConfig(n_experts=4, top_k=1, balance_coef=0.0)).train(grad)
    with torch.no_grad():
        moe.router.weight[1] = -moe.router.weight[0]  # logits a, -a, 0, 0: experts 2 and 3 never chosen
        moe.router.weight[2:] = 0.0
    x = torch.randn(3, 11, 8)
    with torch.set_grad_enabled(grad):
        y, aux = moe(x)
    assert aux is None
    flat = x.reshape(-1, 8)
    with torch.no_grad():
        prob, idx = moe.router(flat).softmax(-1).max(-1)
        assert set(idx.tolist()) == {0, 1}
        ref = torch.stack([moe._expert(int(e), flat[t:t + 1])[0] * prob[t] for t, e in enumerate(idx)])
    torch.testing.assert_close(y.reshape(-1, 8), ref, rtol=1e-5, atol=1e-6)
    if grad:
        y.square().sum().backward()
        assert moe.router.weight.grad[:2].abs().sum() > 0
