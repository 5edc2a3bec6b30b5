"""The time-major feature encoder equals transformers' Wav2Vec2 feature encoder, gradients included, and
AudioEncoder uses it on CPU."""

import pytest
import torch

from jambatalk.config import AudioEncoderConfig
from jambatalk.model import audio_encoder
from jambatalk.model.audio_encoder import AudioEncoder, time_major_features

transformers = pytest.importorskip("transformers")


def _feature_encoder(norm: str, conv_bias: bool):
    """A small transformers feature encoder with every parameter random (the norms' affine ones too)."""
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=[16, 32, 32, 32, 24], conv_kernel=[10, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2],
        conv_bias=conv_bias, feat_extract_norm=norm, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    fe = transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureEncoder(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in fe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0))
    return fe


@pytest.mark.parametrize("norm", ["layer", "group"])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_time_major_features_equal_the_transformers_encoder(norm, conv_bias):
    fe = _feature_encoder(norm, conv_bias)
    audio = torch.randn(2, 4111, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = type(fe).forward(fe, audio).transpose(1, 2)  # (B, T, C)
        assert ref.shape[1] > 20
        for block in (7, ref.shape[1], 10 ** 6):  # blocks that do not divide the frames, one block, none
            out = time_major_features(fe.conv_layers, audio, block_frames=block)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_time_major_features_have_the_transformers_encoders_gradients(norm):
    fe = _feature_encoder(norm, conv_bias=True).double().train()
    audio = torch.randn(2, 4111, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = type(fe).forward(fe, audio).transpose(1, 2)
    grads_ref = torch.autograd.grad(ref.sin().sum(), list(fe.parameters()))
    out = time_major_features(fe.conv_layers, audio, block_frames=7)
    grads = torch.autograd.grad(out.sin().sum(), list(fe.parameters()))
    for g, g_ref in zip(grads, grads_ref):  # (a conv bias before a group norm has a gradient of ~0 both ways)
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9 * max(1.0, float(g_ref.abs().max())))


def test_group_norms_of_a_padded_batch_take_each_items_own_frames():
    fe = _feature_encoder("group", conv_bias=False).double()
    g = torch.Generator().manual_seed(6)
    lengths = torch.tensor([4111, 2900, 1000])
    audio = torch.zeros(3, 4111, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        audio[b, :n] = torch.randn(n, dtype=torch.float64, generator=g)
    with torch.no_grad():
        alone = [type(fe).forward(fe, audio[b:b + 1, :n])[0].T for b, n in enumerate(lengths.tolist())]  # (T_b, C)
        unmasked = time_major_features(fe.conv_layers, audio)
        time_major = time_major_features(fe.conv_layers, audio, block_frames=7, lengths=lengths)
        channel_major = audio_encoder._masked_channel_major(fe.conv_layers, audio, lengths).transpose(1, 2)
    for b, ref in enumerate(alone):
        n = ref.shape[0]
        torch.testing.assert_close(time_major[b, :n], ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(channel_major[b, :n], ref, rtol=1e-9, atol=1e-9)
    assert (unmasked[2, :alone[2].shape[0]] - alone[2]).abs().max() > 0.1  # over the padding: other features

    fe.train()
    params = list(fe.parameters())
    grads_tm = torch.autograd.grad(time_major_features(fe.conv_layers, audio, 7, lengths).sin().sum(), params)
    grads_cm = torch.autograd.grad(audio_encoder._masked_channel_major(fe.conv_layers, audio, lengths).sin().sum(),
                                   params)
    for a, b in zip(grads_tm, grads_cm):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, float(b.abs().max())))


def test_the_tap_convolution_backward_passes_gradcheck():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    taps = torch.randn(3, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: audio_encoder._TapsConv.apply(a, b, c, 2), (x, taps, bias))


def _encoder():
    cfg = AudioEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             conv_dim=[16, 32, 32, 32, 24], conv_kernel=[10, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2],
                             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                             freeze_feature_extractor=False)
    torch.manual_seed(0)
    return AudioEncoder(cfg)


def test_audio_encoder_runs_the_time_major_path_on_cpu(monkeypatch):
    enc = _encoder()
    calls = []
    real = audio_encoder.time_major_features
    monkeypatch.setattr(audio_encoder, "time_major_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    audio = torch.randn(1, 6000, generator=torch.Generator().manual_seed(2))
    fe = enc.wav2vec.feature_extractor
    # the state dict keeps transformers' names, so checkpoints load either way
    assert any(k.startswith("wav2vec.feature_extractor.conv_layers.0.conv.") for k in enc.state_dict())

    def run(time_major: bool):
        fe.time_major = time_major
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks in both runs
        out, _ = enc(audio)
        out.sin().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}

    enc.train()
    out, grads = run(True)
    assert len(calls) == 1
    out_ref, grads_ref = run(False)  # transformers' own forward, switched on the instance (bench rtf does so)
    assert len(calls) == 1
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    assert grads.keys() == grads_ref.keys() and "wav2vec.feature_extractor.conv_layers.0.conv.weight" in grads
    for name, g in grads.items():
        if "k_proj.bias" not in name:  # softmax ignores a key bias: its gradient is float32 noise around 0
            torch.testing.assert_close(g, grads_ref[name], rtol=1e-4, atol=1e-5 * float(grads_ref[name].abs().max()))

    enc.eval()
    with torch.inference_mode():
        fe.time_major = False
        eval_ref, _ = enc(audio)
        fe.time_major = True
        torch.testing.assert_close(enc(audio)[0], eval_ref, rtol=1e-4, atol=1e-5)
    assert len(calls) == 2
