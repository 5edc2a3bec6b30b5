"""The time-major feature encoder equals transformers' Wav2Vec2 feature encoder, and AudioEncoder uses it
for CPU inference only."""

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


def _encoder():
    cfg = AudioEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             conv_dim=[16, 32, 32, 32, 24], conv_kernel=[10, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2],
                             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                             freeze_feature_extractor=False)
    torch.manual_seed(0)
    return AudioEncoder(cfg)


def test_audio_encoder_runs_the_time_major_path_for_inference_only(monkeypatch):
    enc = _encoder()
    calls = []
    real = audio_encoder.time_major_features
    monkeypatch.setattr(audio_encoder, "time_major_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    audio = torch.randn(1, 6000, generator=torch.Generator().manual_seed(2))
    fe = enc.wav2vec.feature_extractor
    fast_class, base = type(fe), type(fe).__mro__[1]
    # the state dict keeps transformers' names, so checkpoints load either way
    assert any(k.startswith("wav2vec.feature_extractor.conv_layers.0.conv.") for k in enc.state_dict())

    enc.eval()
    with torch.no_grad():
        fast, _ = enc(audio)
        assert len(calls) == 1
        fe.__class__ = base
        try:
            ref, _ = enc(audio)
        finally:
            fe.__class__ = fast_class
    assert len(calls) == 1
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)

    enc.train()
    out, _ = enc(audio)  # gradients wanted: transformers' own forward
    assert len(calls) == 1
    out.square().mean().backward()
    assert fe.conv_layers[0].conv.weight.grad is not None
    enc.eval()
    with torch.inference_mode():
        enc(audio)
        assert len(calls) == 2
        fe.time_major = False  # switched off on the instance (bench rtf compares the two)
        torch.testing.assert_close(enc(audio)[0], ref, rtol=1e-4, atol=1e-5)
    assert len(calls) == 2

