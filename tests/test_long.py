"""Any-length audio: windowed encoding and windowed attention match one pass where they should."""

import numpy as np
import torch

from jambatalk.config import model_preset
from jambatalk.model import JambaTalk


def _model(layers=2, bounded=False):
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.audio.num_hidden_layers = layers
    if bounded:  # per-frame norms, and a causal decoder: every output sees a bounded stretch of audio
        cfg.audio.feat_extract_norm = "layer"
        cfg.decoder.schedule = ["mamba", "moe_mamba", "mamba"]
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    return model


def test_short_audio_takes_the_one_pass_path_exactly():
    model = _model()
    audio = np.random.default_rng(0).normal(size=3 * 16000).astype(np.float32) * 0.1
    one_pass = model(torch.as_tensor(audio)[None]).vertices[0].detach().numpy()
    long_path = model.predict(audio)
    diff = float(np.abs(long_path - one_pass).max())
    print(f"max vertex difference, long path vs one pass: {diff:.2e}")
    assert diff <= 1e-5


def test_windowed_encoding_matches_one_pass_where_receptive_fields_coincide():
    """An encoder without self-attention layers sees a bounded window (convolutions); with context
    wider than that window, encoding in windows equals one pass."""
    model = _model(layers=0, bounded=True)
    audio = np.random.default_rng(1).normal(size=6 * 16000).astype(np.float32) * 0.1
    one_pass = model.predict(audio, window_seconds=60.0)
    windowed = model.predict(audio, window_seconds=1.5, context_seconds=0.5)
    diff = float(np.abs(windowed - one_pass).max())
    print(f"max vertex difference, 1.5 s windows vs one pass: {diff:.2e}")
    assert diff <= 1e-4


def test_long_audio_runs_in_windows_with_attention_limited():
    model = _model()
    audio = np.random.default_rng(2).normal(size=40 * 16000).astype(np.float32) * 0.1
    out = model.predict(audio, window_seconds=10.0, context_seconds=1.0)
    assert out.shape == (40 * 25, 64, 3) and np.isfinite(out).all()
    # the attention limit ends with the call
    from jambatalk.model.attention import LONG_WINDOW

    assert LONG_WINDOW.get() == 0


def test_streamable_decoder_runs_long_audio_in_chunks_exactly():
    """A windowed-attention decoder over long audio runs chunk by chunk on its caches: same output."""
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.decoder.attention_span, cfg.decoder.window, cfg.decoder.lookahead = "window", 20, 3
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    assert model.streamable
    audio = np.random.default_rng(3).normal(size=12 * 16000).astype(np.float32) * 0.1
    model.decode_chunk = 10_000  # one pass
    one_pass = model.predict(audio)
    model.decode_chunk = 37  # 300 frames in chunks of 37
    chunked = model.predict(audio)
    diff = float(np.abs(chunked - one_pass).max())
    print(f"max vertex difference, decoder in chunks vs one pass: {diff:.2e}")
    assert diff <= 1e-5
    assert float(np.abs(np.diff(one_pass, axis=0)).max()) > 1e-3


def test_bidirectional_decoder_mamba_layers_in_chunks_match_one_pass():
    model = _model()
    audio = np.random.default_rng(4).normal(size=10 * 16000).astype(np.float32) * 0.1
    model.decode_chunk = 10_000
    one_pass = model.predict(audio)
    model.decode_chunk = 64
    diff = float(np.abs(model.predict(audio) - one_pass).max())
    print(f"max vertex difference, Mamba layers in chunks vs one pass: {diff:.2e}")
    assert diff <= 1e-5
