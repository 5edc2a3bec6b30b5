"""Training losses in one place; weights come from :class:`~jambatalk.config.LossConfig`.

total = vertex * MSE(vertices) + velocity * MSE(frame differences) + lip_vertex * MSE(lip vertices)
        + lip_latent * MSE(lip-reader latents, targets) + lip_ctc * CTC(lip-reader, labels)
        + balance * (MoE balancing terms, each already scaled by its moe.balance_coef)
        + audio_phonemes * CE(phoneme head on the audio encoder's states, the phoneme at each audio frame)
        [+ lip_gt * (the two lip terms again, the lip reader reading the ground-truth lips)]

Lip-reading targets come from one of two sources (``loss.lip_targets``):
  * "asr": a frozen Wav2Vec2ForCTC (``loss.asr_model``): its last hidden state is the latent target and
    the argmax of its logits, collapsed, is the pseudo-transcript (the paper's set-up);
  * "phonemes": the dataset's phoneme labels feed the CTC loss and the audio encoder's own detached hidden
    states are the latent targets (offline; no extra model).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .config import LossConfig, ModelConfig
from .errors import ConfigError

__all__ = ["masked_mse", "velocity_mse", "compute_losses", "AsrTeacher", "phoneme_targets", "collapse_ctc",
           "frame_phoneme_labels"]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error over the valid leading (B, T) positions of (B, T, ...) tensors; 0 where there are
    none (a one-frame sequence has no frame-to-frame differences)."""
    err = (pred - target).pow(2)
    if err.numel() == 0:
        return err.sum()  # 0, still part of the graph
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).reshape(mask.shape + (1,) * (err.dim() - mask.dim()))
    per = err[0, 0].numel() if err.dim() > 2 else 1
    return (err * m).sum() / (m.sum() * per).clamp_min(1.0)


def velocity_mse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """MSE of frame-to-frame differences, counting only pairs of valid frames."""
    dp, dt = pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1]
    pair = None if mask is None else (mask[:, 1:] & mask[:, :-1])
    return masked_mse(dp, dt, pair)


def collapse_ctc(ids: torch.Tensor, blank: int = 0) -> list[int]:
    """Greedy CTC decoding of one argmax path: merge repeats, drop blanks."""
    out, prev = [], None
    for i in ids.tolist():
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def _token_ids(tokens: list) -> dict:
    """Phoneme symbol -> id: 1-based, as 0 is the CTC blank (and silence for the audio phoneme head)."""
    return {t: i + 1 for i, t in enumerate(tokens)}


def phoneme_targets(phonemes: list, tokens: list) -> list[list[int]]:
    """Per item: label symbols -> token ids (1-based; 0 is the CTC blank). Unknown symbols are skipped."""
    table = _token_ids(tokens)
    out = []
    for item in phonemes:
        seq = [] if item is None else [table[p[0]] for p in item if p[0] in table]
        out.append(seq)
    return out


def frame_phoneme_labels(phonemes: Optional[list], tokens: list, n_frames: int, seconds: float) -> torch.Tensor:
    """The phoneme at the centre of each of ``n_frames`` frames spanning ``seconds``: (n_frames,) int64.

    0 where no phoneme is spoken (silence), ``i`` for ``tokens[i - 1]`` (the ids of :func:`phoneme_targets`),
    -100 (ignored by cross-entropy) for a symbol outside ``tokens`` or for an item without labels.
    """
    if phonemes is None:
        return torch.full((n_frames,), -100, dtype=torch.long)
    table = _token_ids(tokens)
    centres = (np.arange(n_frames) + 0.5) * (seconds / max(n_frames, 1))
    labels = np.zeros(n_frames, dtype=np.int64)
    for symbol, start, end in phonemes:
        inside = (centres >= start) & (centres < end)
        labels[inside] = table.get(symbol, -100)
    return torch.from_numpy(labels)


class AsrTeacher(torch.nn.Module):
    """A frozen Wav2Vec2ForCTC giving latent targets and pseudo-transcripts (loaded locally only)."""

    def __init__(self, name_or_model):
        super().__init__()
        from transformers import Wav2Vec2ForCTC

        if isinstance(name_or_model, str):
            from .errors import CheckpointError

            try:
                name_or_model = Wav2Vec2ForCTC.from_pretrained(name_or_model, local_files_only=True)
            except Exception as exc:  # noqa: BLE001
                raise CheckpointError(f"ASR model '{name_or_model}' for lip-reading targets could not be loaded "
                                      f"locally ({type(exc).__name__})",
                                      "download it once on a connected machine, or use loss.lip_targets=phonemes") from exc
        self.model = name_or_model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def blank(self) -> int:
        return self.model.config.pad_token_id or 0

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        mean = audio.mean(-1, keepdim=True)
        std = audio.std(-1, keepdim=True, unbiased=False)
        out = self.model((audio - mean) / (std + 1e-7), output_hidden_states=True)
        return out.hidden_states[-1], out.logits


def _match_length(x: torch.Tensor, n: int) -> torch.Tensor:
    from .model.audio_encoder import resample_features

    return x if x.shape[1] == n else resample_features(x, n)


def compute_losses(out, batch: dict, loss_cfg: LossConfig, model_cfg: ModelConfig,
                   teacher: Optional[AsrTeacher] = None) -> dict[str, torch.Tensor]:
    """All weighted loss terms and their sum ("total") for one batch.

    ``out`` is a :class:`~jambatalk.model.ModelOutput`; ``batch`` holds "vertices" (B, T, V, 3),
    "frame_mask" (B, T), "audio" (B, N), and "phonemes" (labels per item) for the phoneme mode.
    """
    gt = batch["vertices"]
    mask = batch.get("frame_mask")
    T = min(gt.shape[1], out.vertices.shape[1])
    pred, gt = out.vertices[:, :T], gt[:, :T]
    mask = None if mask is None else mask[:, :T]
    terms = {
        "vertex": masked_mse(pred, gt, mask),
        "velocity": velocity_mse(pred, gt, mask),
        "balance": out.aux_loss,
    }
    weights = {"vertex": loss_cfg.vertex, "velocity": loss_cfg.velocity, "balance": loss_cfg.balance}
    if loss_cfg.lip_vertex > 0:
        if not model_cfg.lip_indices:
            raise ConfigError("loss.lip_vertex is set but model.lip_indices is empty",
                              "give model.lip_indices (the dataset spec sets them), or set loss.lip_vertex=0")
        lips = torch.as_tensor(model_cfg.lip_indices, dtype=torch.long, device=pred.device)
        terms["lip_vertex"] = masked_mse(pred[:, :, lips], gt[:, :, lips], mask)
        weights["lip_vertex"] = loss_cfg.lip_vertex
    if out.lip_latent is not None:
        Na = out.lip_latent.shape[1]
        if loss_cfg.lip_targets == "asr":
            if teacher is None:
                raise ConfigError("loss.lip_targets is 'asr' but no ASR teacher was loaded", "set loss.asr_model")
            target, logits = teacher(batch["audio"])
            target, logits = _match_length(target, Na), _match_length(logits, Na)
            labels = [collapse_ctc(lg.argmax(-1), teacher.blank) for lg in logits]
        else:
            target = out.audio_hidden.detach()
            labels = phoneme_targets(batch.get("phonemes") or [None] * gt.shape[0], model_cfg.lip_reader.tokens)
        if target.shape[-1] != out.lip_latent.shape[-1]:
            raise ConfigError(f"lip-reading latent targets have width {target.shape[-1]} but the lip reader outputs "
                              f"{out.lip_latent.shape[-1]}", "set model.lip_reader.latent_dim to the target width")
        reads = [("", out.lip_latent, out.lip_log_probs, 1.0)]
        if loss_cfg.lip_gt > 0 and out.gt_lip_latent is not None:
            reads.append(("_gt", out.gt_lip_latent, out.gt_lip_log_probs, loss_cfg.lip_gt))
        in_len = (out.audio_mask.sum(1) if out.audio_mask is not None
                  else torch.full((gt.shape[0],), Na, device=gt.device)).long()
        keep = [i for i, seq in enumerate(labels) if seq]
        for suffix, latent, log_probs, scale in reads:
            terms["lip_latent" + suffix] = masked_mse(latent, target, out.audio_mask)
            weights["lip_latent" + suffix] = loss_cfg.lip_latent * scale
            if log_probs is not None and keep:
                flat = torch.tensor([t for i in keep for t in labels[i]], dtype=torch.long, device=gt.device)
                tgt_len = torch.tensor([len(labels[i]) for i in keep], dtype=torch.long, device=gt.device)
                lp = log_probs[keep].transpose(0, 1).float()  # (Na, B', vocab)
                terms["lip_ctc" + suffix] = F.ctc_loss(lp, flat, in_len[keep], tgt_len, blank=0, reduction="mean",
                                                       zero_infinity=True)
                weights["lip_ctc" + suffix] = loss_cfg.lip_ctc * scale
    if out.phoneme_logits is not None and loss_cfg.audio_phonemes > 0:
        terms["audio_phonemes"] = _audio_phoneme_loss(out, batch, model_cfg)
        weights["audio_phonemes"] = loss_cfg.audio_phonemes
    total = sum(weights[k] * v for k, v in terms.items())
    terms["total"] = total
    return terms


def _audio_phoneme_loss(out, batch: dict, model_cfg: ModelConfig) -> torch.Tensor:
    """Cross-entropy of the phoneme head at every valid audio frame against the labelled phoneme there."""
    logits = out.phoneme_logits
    B, Na = logits.shape[:2]
    phonemes = batch.get("phonemes") or [None] * B
    n_samples = batch.get("audio_lengths")
    n_samples = [batch["audio"].shape[-1]] * B if n_samples is None else [int(n) for n in n_samples]
    valid = [Na] * B if out.audio_mask is None else [int(n) for n in out.audio_mask.sum(1)]
    rate = model_cfg.audio.sample_rate
    labels = torch.full((B, Na), -100, dtype=torch.long)
    for i in range(B):
        labels[i, : valid[i]] = frame_phoneme_labels(phonemes[i], model_cfg.lip_reader.tokens, valid[i],
                                                     n_samples[i] / rate)
    labels = labels.to(logits.device)
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(B * Na, -1).float(), labels.reshape(-1), ignore_index=-100)
