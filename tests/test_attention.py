"""GQA attention, LRL-RoPE and attention spans."""

import pytest
import torch

from jambatalk.config import DecoderConfig
from jambatalk.model.attention import GQAttention, LRLRoPE, _pairs_are_complex, span_mask


def _cfg(**kw):
    base = dict(d_model=32, n_heads=4, n_kv_heads=2, rope_rank=4, schedule=["attention"])
    base.update(kw)
    return DecoderConfig(**base)


def test_gqa_has_fewer_kv_parameters_than_mha():
    gqa, mha = GQAttention(_cfg(n_kv_heads=1)), GQAttention(_cfg(n_kv_heads=4))
    kv = lambda m: m.k_proj.weight.numel() + m.v_proj.weight.numel()  # noqa: E731
    assert kv(gqa) * 4 == kv(mha)
    assert gqa.k_proj.weight.shape == (8, 32)  # one head of head_dim 8


@pytest.mark.parametrize("sdpa_gqa", [True, False], ids=["sdpa-groups", "repeated-kv"])
def test_gqa_equals_mha_with_repeated_kv_heads(sdpa_gqa, monkeypatch):
    """Grouped K/V (handed to scaled_dot_product_attention as groups from torch 2.5 on, else repeated to every
    query head) equal multi-head attention whose K/V weights repeat them, with and without a span mask."""
    import jambatalk.model.attention as attention

    if sdpa_gqa and not attention.SDPA_GQA:
        pytest.skip(f"torch {torch.__version__} has no enable_gqa")
    monkeypatch.setattr(attention, "SDPA_GQA", sdpa_gqa)
    torch.manual_seed(0)
    gqa = GQAttention(_cfg(n_kv_heads=2)).eval()
    mha = GQAttention(_cfg(n_kv_heads=4)).eval()
    hd = gqa.head_dim
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        mha.rope.load_state_dict(gqa.rope.state_dict())
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, hd, 32)
            getattr(mha, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(4 * hd, 32))
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(gqa(x), mha(x), rtol=1e-5, atol=1e-6)
    for m in (gqa, mha):
        m.span, m.window, m.lookahead = "window", 4, 1
    torch.testing.assert_close(gqa(x), mha(x), rtol=1e-5, atol=1e-6)


def test_lrl_rope_with_zero_low_rank_weights_is_an_exact_rotation():
    torch.manual_seed(0)
    rope = LRLRoPE(16, rank=4)
    with torch.no_grad():
        rope.w1.weight.normal_()
        rope.w2.weight.zero_()
    x = torch.randn(3, 20, 16)
    pos = torch.arange(20)
    y = rope(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    # scores depend only on relative position: <R(p) q, R(p+d) k> is the same for every p
    q, k = torch.randn(16), torch.randn(16)
    scores = []
    for p in (0, 5, 37, 300):
        rq = rope(q[None, None], torch.tensor([p]))[0, 0]
        rk = rope(k[None, None], torch.tensor([p + 7]))[0, 0]
        scores.append(float((rq @ rk).detach()))
    assert max(scores) - min(scores) < 1e-4


def test_lrl_rope_rotation_as_complex_products_equals_the_pairwise_formula():
    """The complex-product rotation (float32/64, pairs readable in place) equals the pairwise formula, outputs
    and gradients (the learned low-rank part included), on strided inputs (heads transposed as attention
    passes them) too; bfloat16 and inputs whose pairs cannot be read in place take the pairwise formula."""
    torch.manual_seed(4)
    rope = LRLRoPE(16, rank=4).double()
    with torch.no_grad():
        rope.w2.weight.normal_(std=0.1)
    pos = torch.arange(3, 14)

    def pairwise(x):
        s, c = rope.sin_cos(pos)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)

    base = torch.randn(2, 11, 3, 16, dtype=torch.float64)
    strided, odd = base.transpose(1, 2), base.reshape(2, 11, 48)[..., 1:17]  # heads transposed; odd offset
    assert _pairs_are_complex(strided) and not _pairs_are_complex(odd)
    for x in (strided, odd):
        x = x.detach().requires_grad_(True)
        y, y_ref = rope(x, pos), pairwise(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        w = torch.randn_like(y)
        grads = torch.autograd.grad((y * w).sum(), [x, rope.w1.weight, rope.w2.weight])
        grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, rope.w1.weight, rope.w2.weight])
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    rope = rope.float()
    x = torch.randn(2, 3, 11, 16)
    with torch.no_grad():
        torch.testing.assert_close(rope(x.bfloat16(), pos).float(), rope(x, pos), rtol=2e-2, atol=2e-2)


def test_lrl_rope_learned_part_changes_the_embedding():
    rope = LRLRoPE(16, rank=4)
    x = torch.randn(1, 5, 16)
    base = rope(x, torch.arange(5))
    with torch.no_grad():
        rope.w2.weight.normal_()
    assert not torch.allclose(rope(x, torch.arange(5)), base)


def test_span_masks():
    assert span_mask(0, 6, 0, 6, "bidirectional") is None
    causal = span_mask(0, 6, 0, 6, "causal")
    assert causal[2].tolist() == [True, True, True, False, False, False]
    win = span_mask(0, 6, 0, 6, "window", window=2, lookahead=1)
    assert win[3].tolist() == [False, True, True, True, True, False]


@pytest.mark.parametrize("span", ["causal", "window"])
@pytest.mark.parametrize("q_start,n_q,k_start,n_k", [(0, 7, 0, 7), (10, 4, 3, 15), (5, 6, 9, 2), (20, 3, 0, 9)])
def test_span_mask_equals_the_position_rule(span, q_start, n_q, k_start, n_k):
    """The band equals the definition on offset, unequal query and key ranges (as streaming and query
    blocks use): key - query position within [-window, lookahead], or <= 0 for causal."""
    window, lookahead = 4, 2
    rel = torch.arange(k_start, k_start + n_k)[None, :] - torch.arange(q_start, q_start + n_q)[:, None]
    want = rel <= 0 if span == "causal" else (rel >= -window) & (rel <= lookahead)
    assert torch.equal(span_mask(q_start, n_q, k_start, n_k, span, window, lookahead), want)


@pytest.mark.parametrize("span,window,lookahead", [("causal", 0, 0), ("window", 4, 0), ("window", 3, 2)])
def test_chunked_step_equals_forward(span, window, lookahead):
    torch.manual_seed(1)
    attn = GQAttention(_cfg(attention_span=span, window=window, lookahead=lookahead)).eval()
    with torch.no_grad():
        attn.rope.w2.weight.normal_(std=0.1)
    x = torch.randn(2, 23, 32)
    full = attn(x)
    cache = attn.allocate_cache(2)
    outs, t = [], 0
    for size in (1, 4, 2, 7, 1, 8):
        outs.append(attn.step(x[:, t: t + size], cache))
        t += size
    outs.append(attn.flush(cache))
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


def test_windowed_forward_in_query_blocks_equals_one_block():
    torch.manual_seed(2)
    attn = GQAttention(_cfg(attention_span="window", window=5, lookahead=3)).eval()
    x = torch.randn(1, 50, 32)
    whole = attn(x)
    attn.query_block = 8
    torch.testing.assert_close(attn(x), whole, rtol=1e-5, atol=1e-6)


def _attention_by_the_rule(attn, x, window, lookahead, key_valid=None):
    """Windowed attention written out: softmax over the keys within [-window, +lookahead] of each query."""
    L = x.shape[1]
    q, k, v = attn._qkv(x, torch.arange(L))
    groups = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = q @ k.transpose(-1, -2) / attn.head_dim ** 0.5
    rel = torch.arange(L)[None, :] - torch.arange(L)[:, None]
    allowed = ((rel >= -window) & (rel <= lookahead))[None, None]
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, None, :]
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return attn.o_proj(out.transpose(1, 2).reshape(x.shape[0], L, -1))


@pytest.mark.parametrize("kept", [True, False], ids=["kept-masks", "masks-made-each-call"])
def test_windowed_attention_equals_the_position_rule(kept, monkeypatch):
    """The additive span masks (kept between calls, or made afresh where larger than KEPT_BIAS_MAX) give the
    written-out windowed attention, in query blocks and in one; with a key padding mask too."""
    from jambatalk.model import attention

    if not kept:
        monkeypatch.setattr(attention, "KEPT_BIAS_MAX", 0)
    attention._kept_span_bias.cache_clear()
    torch.manual_seed(5)
    attn = GQAttention(_cfg(attention_span="window", window=6, lookahead=2)).eval()
    x = torch.randn(2, 40, 32)
    with torch.no_grad():
        want = _attention_by_the_rule(attn, x, 6, 2)
        for block in (8, 128):
            attn.query_block = block
            torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-6)  # a second call, masks kept or not
        valid = torch.ones(2, 40, dtype=torch.bool)
        valid[1, 31:] = False
        torch.testing.assert_close(attn(x, key_padding_mask=valid)[1, :31],
                                   _attention_by_the_rule(attn, x, 6, 2, valid)[1, :31], rtol=1e-5, atol=1e-6)
    assert (attention._kept_span_bias.cache_info().currsize > 0) == kept
    bias = attention.span_bias(3, 4, 0, 9, "window", 2, 1, x)
    assert bias.dtype == x.dtype and torch.equal(bias == 0, span_mask(3, 4, 0, 9, "window", 2, 1))
    assert bool(torch.isneginf(bias[bias != 0]).all())


def test_causal_attention_gives_no_gradient_to_the_future():
    attn = GQAttention(_cfg(attention_span="causal"))
    x = torch.randn(1, 10, 32, requires_grad=True)
    attn(x)[0, :4].sum().backward()
    assert x.grad[0, 4:].abs().max() == 0
    assert x.grad[0, :4].abs().max() > 0


def test_bidirectional_attention_refuses_streaming():
    from jambatalk.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot run step by step"):
        GQAttention(_cfg()).allocate_cache(1)


def test_key_padding_mask_hides_padded_frames():
    torch.manual_seed(3)
    attn = GQAttention(_cfg()).eval()
    x = torch.randn(1, 9, 32)
    padded = torch.cat([x, torch.randn(1, 4, 32) * 100], dim=1)
    mask = torch.tensor([[True] * 9 + [False] * 4])
    torch.testing.assert_close(attn(padded, key_padding_mask=mask)[:, :9], attn(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("span", ["window", "causal", "bidirectional"])
def test_no_query_is_left_without_keys_by_padding(span):
    """A padded frame whose whole span was padding had every key masked: CUDA's memory-efficient attention (torch
    before 2.5) gave NaN for such rows, which reached the real frames through 0 * NaN. Each query now keeps its own
    key; the real frames' outputs are unchanged."""
    torch.manual_seed(3)
    attn = GQAttention(_cfg(attention_span=span, window=3, lookahead=1)).eval()
    valid = torch.tensor([[True] * 6 + [False] * 10])  # padding longer than the window
    mask = attn._mask(0, 16, 0, 16, attn.span, attn.window, attn.lookahead, valid, torch.zeros(1))
    assert mask.any(dim=-1).all()  # every query row keeps a key
    assert not mask[0, 0, :6, 6:].any()  # real frames still see no padding
    x = torch.randn(1, 16, 32)
    torch.testing.assert_close(attn(x, key_padding_mask=valid)[:, :6], attn(x[:, :6]), rtol=1e-5, atol=1e-5)
