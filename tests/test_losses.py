"""Loss terms and the two sources of lip-reading targets."""

import numpy as np
import pytest
import torch

from jambatalk.config import LossConfig, model_preset
from jambatalk.errors import CheckpointError, ConfigError
from jambatalk.losses import (
    AsrTeacher,
    collapse_ctc,
    compute_losses,
    frame_phoneme_labels,
    masked_mse,
    phoneme_targets,
    velocity_mse,
)
from jambatalk.model import JambaTalk


def test_masked_and_velocity_mse_ignore_padding():
    pred = torch.zeros(2, 4, 3)
    gt = torch.ones(2, 4, 3)
    gt[1, 2:] = 100.0  # padding
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    assert float(masked_mse(pred, gt, mask)) == pytest.approx(1.0)
    assert float(velocity_mse(pred, gt, mask)) == pytest.approx(0.0)
    assert float(velocity_mse(pred, gt, None)) > 0


def test_velocity_mse_of_a_one_frame_sequence_is_zero_and_keeps_the_graph():
    pred = torch.randn(1, 1, 5, 3, requires_grad=True)
    gt = torch.randn(1, 1, 5, 3)
    for mask in (None, torch.ones(1, 1, dtype=torch.bool)):
        loss = velocity_mse(pred, gt, mask)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_ctc_helpers():
    assert collapse_ctc(torch.tensor([0, 3, 3, 0, 3, 2, 2, 0])) == [3, 3, 2]
    assert phoneme_targets([[["a", 0, 1], ["x", 1, 2], ["b", 2, 3]], None], ["a", "b"]) == [[1, 2], []]


@pytest.fixture
def tiny_asr(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         conv_dim=[32, 32, 32], conv_kernel=[10, 8, 4], conv_stride=[5, 8, 8],
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=8, pad_token_id=0)
    Wav2Vec2ForCTC(cfg).save_pretrained(tmp_path / "asr")
    return tmp_path / "asr"


def test_asr_mode_uses_the_frozen_teacher_for_latents_and_pseudo_transcripts(tiny_asr):
    teacher = AsrTeacher(str(tiny_asr))
    assert teacher.vocab_size == 8 and not any(p.requires_grad for p in teacher.parameters())
    cfg = model_preset("tiny")
    cfg.lip_reader.tokens = [f"<{i}>" for i in range(1, 8)]
    model = JambaTalk(cfg).train()
    with torch.no_grad():
        model.head.weight.normal_(std=0.01)
    audio = torch.randn(1, 16000) * 0.1
    out = model(audio, n_frames=25)
    batch = {"vertices": torch.zeros(1, 25, cfg.n_vertices, 3), "audio": audio, "frame_mask": None}
    losses = compute_losses(out, batch, LossConfig(lip_targets="asr", asr_model=str(tiny_asr)), cfg, teacher)
    target, logits = teacher(audio)
    expected = torch.nn.functional.mse_loss(out.lip_latent, target[:, : out.lip_latent.shape[1]])
    torch.testing.assert_close(losses["lip_latent"], expected)
    if collapse_ctc(logits[0].argmax(-1)):
        assert "lip_ctc" in losses and torch.isfinite(losses["lip_ctc"])
    losses["total"].backward()
    assert model.lip_reader.latent.weight.grad.abs().sum() > 0


def test_asr_mode_needs_a_model_name_and_a_loadable_model(tmp_path):
    with pytest.raises(ConfigError, match="asr_model"):
        LossConfig(lip_targets="asr")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        AsrTeacher(str(tmp_path / "missing"))


def test_phoneme_mode_targets_are_the_encoder_states_detached():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = JambaTalk(cfg).train()
    audio = torch.randn(1, 16000) * 0.1
    out = model(audio, n_frames=25)
    batch = {"vertices": torch.zeros(1, 25, cfg.n_vertices, 3), "audio": audio, "frame_mask": None,
             "phonemes": [[["a", 0.0, 0.3], ["b", 0.3, 0.6]]]}
    losses = compute_losses(out, batch, LossConfig(), cfg)
    torch.testing.assert_close(losses["lip_latent"],
                               torch.nn.functional.mse_loss(out.lip_latent, out.audio_hidden.detach()))
    model.zero_grad()
    losses["lip_latent"].backward()
    enc = [p.grad for p in model.audio_encoder.parameters() if p.requires_grad]
    assert all(g is None or g.abs().sum() == 0 for g in enc)  # targets do not pull the encoder
    weights = LossConfig()
    total = sum(getattr(weights, k) * losses[k] for k in ("vertex", "velocity", "lip_latent", "lip_ctc")) \
        + weights.balance * losses["balance"]
    torch.testing.assert_close(losses["total"], total)
    assert np.isfinite(losses["lip_ctc"].item())


def test_lip_reader_reads_ground_truth_lips_without_pulling_the_decoder():
    """loss.lip_gt adds the lip terms on the ground-truth lips; they train the lip reader only."""
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.lip_reader.tokens = ["a", "b"]
    model = JambaTalk(cfg).train()
    audio = torch.randn(1, 16000) * 0.1
    gt = torch.randn(1, 25, cfg.n_vertices, 3) * 1e-3
    batch = {"vertices": gt, "audio": audio, "frame_mask": None, "phonemes": [[["a", 0.0, 0.3], ["b", 0.3, 0.6]]]}
    out = model(audio, n_frames=25, target_vertices=gt, gt_lip_reading=True)
    assert out.gt_lip_latent is not None and out.gt_lip_log_probs is not None
    loss_cfg = LossConfig(lip_gt=10.0)
    losses = compute_losses(out, batch, loss_cfg, cfg)
    assert {"lip_latent_gt", "lip_ctc_gt"} <= set(losses)
    assert not torch.allclose(out.gt_lip_latent, out.lip_latent)
    model.zero_grad()
    (losses["lip_ctc_gt"] + losses["lip_latent_gt"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lip_reader.parameters())
    total_without = compute_losses(out, batch, LossConfig(lip_gt=0.0), cfg)["total"]
    extra = loss_cfg.lip_gt * (loss_cfg.lip_latent * losses["lip_latent_gt"] + loss_cfg.lip_ctc * losses["lip_ctc_gt"])
    torch.testing.assert_close(losses["total"], total_without + extra)


def test_lip_reader_input_scale_brings_millimetre_motion_to_unit_scale():
    """Offsets of a millimetre must change the lip reader's output as much as unit inputs would
    without the scale: otherwise the positional encoding drowns them."""
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = JambaTalk(cfg).eval()
    n = len(cfg.lip_indices)
    still = torch.zeros(1, 25, n, 3)
    moving = still.clone()
    moving[:, 10:15] = 1e-3
    a, _ = model.lip_reader(still, 50)
    b, _ = model.lip_reader(moving, 50)
    assert (a - b).abs().max().item() > 0.05
    model.lip_reader.cfg.input_scale = 1.0
    c, _ = model.lip_reader(moving, 50)
    assert (a - c).abs().max().item() < 0.01


def test_frame_phoneme_labels_name_the_phoneme_at_each_frame_centre():
    # 20 frames over 0.5 s: centres at 0.0125, 0.0375, ... s
    labels = frame_phoneme_labels([["p", 0.0, 0.1], ["a", 0.1, 0.3], ["?", 0.3, 0.35]], ["a", "p"], 20, 0.5)
    assert labels.dtype == torch.long
    assert labels.tolist() == [2] * 4 + [1] * 8 + [-100] * 2 + [0] * 6
    assert frame_phoneme_labels(None, ["a"], 5, 0.1).tolist() == [-100] * 5


def test_audio_phoneme_head_learns_the_frame_phonemes_and_trains_the_encoder():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    assert JambaTalk(cfg).phoneme_head is None  # off unless asked for
    cfg.phoneme_head = True
    cfg.lip_reader.tokens = []
    with pytest.raises(ConfigError, match="tokens"):
        JambaTalk(cfg)
    cfg.lip_reader.tokens = ["a", "b"]
    model = JambaTalk(cfg).train()
    audio = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 8000])
    out = model(audio, n_frames=25, audio_lengths=lengths)
    assert out.phoneme_logits.shape == out.audio_hidden.shape[:2] + (3,)
    phonemes = [[["a", 0.0, 0.3], ["b", 0.3, 0.6]], [["b", 0.1, 0.4]]]
    batch = {"vertices": torch.zeros(2, 25, cfg.n_vertices, 3), "audio": audio, "audio_lengths": lengths,
             "frame_mask": None, "phonemes": phonemes}
    loss_cfg = LossConfig(audio_phonemes=0.5)
    losses = compute_losses(out, batch, loss_cfg, cfg)
    valid = out.audio_mask.sum(1).tolist()
    logits, want = [], []
    for i, seconds in enumerate((1.0, 0.5)):
        logits.append(out.phoneme_logits[i, : valid[i]])
        want.append(frame_phoneme_labels(phonemes[i], ["a", "b"], valid[i], seconds))
    expected = torch.nn.functional.cross_entropy(torch.cat(logits), torch.cat(want))
    torch.testing.assert_close(losses["audio_phonemes"], expected)
    without = compute_losses(out, batch, LossConfig(), cfg)
    assert "audio_phonemes" not in without
    torch.testing.assert_close(losses["total"], without["total"] + 0.5 * expected)
    model.zero_grad()
    losses["audio_phonemes"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.audio_encoder.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    with pytest.raises(ConfigError, match="audio_phonemes"):
        LossConfig(audio_phonemes=1.0, lip_targets="asr", asr_model="x")


def test_lip_vertex_term_is_the_mse_of_the_lip_vertices_alone():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = JambaTalk(cfg).train()
    audio = torch.randn(2, 16000) * 0.1
    out = model(audio, n_frames=25)
    gt = torch.zeros(2, 25, cfg.n_vertices, 3)
    lips = torch.tensor(cfg.lip_indices)
    gt[:, :, lips] = 2e-3  # an error on the lips only ...
    others = torch.ones(cfg.n_vertices, dtype=torch.bool)
    others[lips] = False
    gt[:, :, others] = out.vertices.detach()[:, :, others]  # ... everything else is exact
    mask = torch.tensor([[True] * 25, [True] * 20 + [False] * 5])
    gt[1, 20:] = 1.0  # padding: ignored
    batch = {"vertices": gt, "audio": audio, "frame_mask": mask, "phonemes": None}
    losses = compute_losses(out, batch, LossConfig(lip_vertex=3000.0), cfg)
    err = (out.vertices[:, :, lips] - gt[:, :, lips]).pow(2)
    expected = torch.cat([err[0].reshape(-1), err[1, :20].reshape(-1)]).mean()
    torch.testing.assert_close(losses["lip_vertex"], expected)
    without = compute_losses(out, batch, LossConfig(), cfg)
    assert "lip_vertex" not in without  # off by default
    torch.testing.assert_close(losses["total"], without["total"] + 3000.0 * expected)
    # the whole-mesh term sees the same lip error diluted by the other vertices
    torch.testing.assert_close(losses["vertex"], expected * len(lips) / cfg.n_vertices)
    cfg.lip_indices = []
    with pytest.raises(ConfigError, match="lip_indices"):
        compute_losses(out, batch, LossConfig(lip_vertex=1.0), cfg)
    with pytest.raises(ConfigError, match="lip_vertex"):
        LossConfig(lip_vertex=-1.0)
