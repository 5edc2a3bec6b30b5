"""The JambaTalk model: speech -> per-vertex offsets -> animated mesh."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig, from_dict, to_dict
from ..errors import CheckpointError, InputError
from .audio_encoder import AudioEncoder, frames_for_samples, resample_features
from .decoder import JambaDecoder

__all__ = ["JambaTalk", "ModelOutput", "CONFIG_NAME", "WEIGHTS_NAME", "read_weights"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "jambatalk-model"
#: 2: MoE layers with top_k 1 scale the chosen expert by its routing probability (Switch routing); format-1
#: models used it unscaled, so a format-1 model with top-1 routing among 2 or more experts is refused
FORMAT_VERSION = 2


@dataclass
class ModelOutput:
    vertices: torch.Tensor  # (B, T, V, 3) template + offsets
    offsets: torch.Tensor  # (B, T, V, 3)
    frame_mask: Optional[torch.Tensor]  # (B, T) True at valid frames (None: all valid)
    aux_loss: torch.Tensor  # MoE balancing terms (scalar)
    audio_hidden: torch.Tensor  # (B, Na, H) encoder states at the audio-feature rate
    audio_mask: Optional[torch.Tensor]  # (B, Na) True at valid audio frames
    lip_latent: Optional[torch.Tensor] = None  # (B, Na, H) lip reader latents (training)
    lip_log_probs: Optional[torch.Tensor] = None  # (B, Na, vocab) CTC log-probabilities (training)
    gt_lip_latent: Optional[torch.Tensor] = None  # the same, read from the ground-truth lips (loss.lip_gt)
    gt_lip_log_probs: Optional[torch.Tensor] = None
    phoneme_logits: Optional[torch.Tensor] = None  # (B, Na, tokens + 1) audio-frame phonemes (phoneme_head)


def read_weights(path: Path, device="cpu", fix: str = "the checkpoint is damaged: re-export it") -> dict:
    """The tensors of safetensors file ``path``; a CheckpointError (with ``fix``) when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({exc})", fix) from exc


def _check_faces(faces: Optional[torch.Tensor], n_vertices: int, weights: Path) -> None:
    """A CheckpointError when a checkpoint's faces are not (F, 3) whole-number indices of its ``n_vertices``
    vertices (an index past them was written out into every mesh file; float faces were cast silently)."""
    if faces is None:
        return
    fix = "the checkpoint is damaged or mixed up: re-export it"
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool or faces.ndim != 2 \
            or faces.shape[1] != 3:
        raise CheckpointError(f"'{weights}' stores faces of dtype {str(faces.dtype).removeprefix('torch.')} and "
                              f"shape {tuple(faces.shape)}, not (F, 3) integer vertex indices", fix)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= n_vertices):
        bad = int(faces.min()) if int(faces.min()) < 0 else int(faces.max())
        raise CheckpointError(f"'{weights}' has faces indexing vertex {bad}, but its meshes have {n_vertices} "
                              f"vertices (0 to {n_vertices - 1})", fix)


def _lengths_mask(lengths: Optional[torch.Tensor], size: int, device) -> Optional[torch.Tensor]:
    if lengths is None:
        return None
    return torch.arange(size, device=device)[None] < lengths.to(device)[:, None]


class JambaTalk(nn.Module):
    """Wav2Vec 2.0 encoder -> projection -> hybrid Jamba decoder -> zero-initialised vertex head."""

    def __init__(self, cfg: ModelConfig, template: Optional[np.ndarray] = None, faces: Optional[np.ndarray] = None):
        super().__init__()
        self.cfg = cfg
        V = cfg.n_vertices
        self.audio_encoder = AudioEncoder(cfg.audio)
        self.audio_proj = nn.Linear(cfg.audio.hidden_size, cfg.decoder.d_model)
        self.style = nn.Embedding(cfg.n_subjects, cfg.decoder.d_model) if cfg.n_subjects else None
        if cfg.decoder.type == "faceformer":  # autoregressive baseline; its vertex head is inside it
            from .faceformer import FaceFormerDecoder

            self.decoder = FaceFormerDecoder.from_config(cfg.decoder, V, cfg.fps, cfg.decoder.period)
            self.head = None
        else:
            self.decoder = JambaDecoder(cfg.decoder)
            self.head = nn.Linear(cfg.decoder.d_model, 3 * V)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.register_buffer("lip_index", torch.tensor(cfg.lip_indices, dtype=torch.long), persistent=False)
        self.lip_reader = None
        if cfg.lip_reader.enabled:
            from ..errors import ConfigError
            from .lip_reader import LipReader

            if not cfg.lip_indices:
                raise ConfigError("lip_reader.enabled is true but model.lip_indices is empty",
                                  "train through jambatalk train (it takes the lip mask from the dataset spec), "
                                  "give model.lip_indices, or set model.lip_reader.enabled=false")

            latent = cfg.lip_reader.latent_dim or cfg.audio.hidden_size
            self.lip_reader = LipReader(cfg.lip_reader, len(cfg.lip_indices), latent)
        self.phoneme_head = None
        if cfg.phoneme_head:
            from ..errors import ConfigError

            if not cfg.lip_reader.tokens:
                raise ConfigError("model.phoneme_head is true but model.lip_reader.tokens is empty",
                                  "train through jambatalk train (it takes the tokens from the dataset), or give "
                                  "model.lip_reader.tokens")
            # class 0 is silence (no phoneme); class i is lip_reader.tokens[i - 1]
            self.phoneme_head = nn.Linear(cfg.audio.hidden_size, len(cfg.lip_reader.tokens) + 1)
        self.register_buffer("template", torch.zeros(V, 3), persistent=True)
        self.register_buffer("faces", torch.zeros(0, 3, dtype=torch.long), persistent=True)
        if template is not None:
            self.set_template(template, faces)

    # -- template ------------------------------------------------------------------------------
    def set_template(self, template, faces=None) -> None:
        from ..mesh import check_vertices

        v = check_vertices(template, "template", self.cfg.n_vertices)
        self.template = torch.tensor(v, device=self.template.device)  # a copy: never the caller's array
        if faces is not None:
            f = torch.tensor(np.array(faces, dtype=np.int64), device=self.template.device).reshape(-1, 3)
            self.faces = f

    @property
    def fps(self) -> float:
        return self.cfg.fps

    @property
    def device(self) -> torch.device:
        return self.template.device

    # -- forward -------------------------------------------------------------------------------
    def encode_audio(self, audio: torch.Tensor, audio_lengths: Optional[torch.Tensor] = None):
        return self.audio_encoder(audio, audio_lengths)

    def _decoder_input(self, hidden, hidden_lengths, n_frames, frame_lengths=None, subject_index=None):
        """Audio states at the feature rate -> decoder input (B, T, D) at the mesh frame rate."""
        B = hidden.shape[0]
        if frame_lengths is None:
            x = resample_features(hidden[:, : int(hidden_lengths.max())], n_frames)
        else:  # resample each item over its own valid span
            x = hidden.new_zeros(B, n_frames, hidden.shape[-1])
            for b in range(B):
                t = int(frame_lengths[b])
                x[b, :t] = resample_features(hidden[b: b + 1, : int(hidden_lengths[b])], t)[0]
        x = self.audio_proj(x)
        if self.style is not None and subject_index is not None:
            known = subject_index >= 0
            x = x + (self.style(subject_index.clamp_min(0)) * known[:, None].to(x.dtype))[:, None]
        return x

    def decode(self, hidden: torch.Tensor, hidden_lengths: torch.Tensor, n_frames: int,
               frame_lengths: Optional[torch.Tensor] = None, subject_index: Optional[torch.Tensor] = None,
               target_offsets: Optional[torch.Tensor] = None):
        """Audio hidden states (B, Na, H) -> offsets (B, T, V, 3), frame mask and the MoE auxiliary loss.

        ``target_offsets`` (B, T, V, 3) are used by the FaceFormer-style decoder only (teacher forcing);
        without them it generates frame by frame."""
        x = self._decoder_input(hidden, hidden_lengths, n_frames, frame_lengths, subject_index)
        frame_mask = _lengths_mask(frame_lengths, n_frames, x.device)
        if self.head is None:
            off = self.decoder(x, target_offsets, key_padding_mask=frame_mask)
            return off.view(x.shape[0], n_frames, self.cfg.n_vertices, 3), frame_mask, x.new_zeros(())
        h, aux = self.decoder(x, key_padding_mask=frame_mask)
        return self.head(h).view(x.shape[0], n_frames, self.cfg.n_vertices, 3), frame_mask, aux

    #: frames per chunk when predict() runs the decoder's Mamba layers over long audio
    decode_chunk = 2048

    @property
    def streamable(self) -> bool:
        """True when the decoder can run step by step (no bidirectional attention; not FaceFormer-style)."""
        return self.head is not None and all(getattr(layer.mixer, "span", "causal") != "bidirectional"
                                             for layer in self.decoder.layers)

    @contextlib.contextmanager
    def long_context(self, frames: int):
        """Within this block, and for this thread alone, bidirectional attention on sequences longer than
        2 x ``frames`` attends within +-``frames`` (see :class:`~jambatalk.model.attention.GQAttention`)."""
        from .attention import LONG_WINDOW

        token = LONG_WINDOW.set(int(frames))
        try:
            yield
        finally:
            LONG_WINDOW.reset(token)

    def forward(self, audio: torch.Tensor, template: Optional[torch.Tensor] = None, *,
                n_frames: Optional[int] = None, audio_lengths: Optional[torch.Tensor] = None,
                frame_lengths: Optional[torch.Tensor] = None, subject_index: Optional[torch.Tensor] = None,
                lip_reading: Optional[bool] = None, target_vertices: Optional[torch.Tensor] = None,
                gt_lip_reading: bool = False) -> ModelOutput:
        """audio (B, N) 16 kHz; template (B, V, 3) or (V, 3) (default: the model's own).

        ``target_vertices`` (B, T, V, 3): ground truth for teacher forcing (FaceFormer-style decoder only)
        and, with ``gt_lip_reading``, for the lip reader to read as well (``loss.lip_gt``)."""
        if n_frames is None:
            n_frames = frames_for_samples(audio.shape[-1], self.cfg.fps)
        tpl = self.template if template is None else template
        tpl = tpl[:, None] if tpl.dim() == 3 else tpl
        target = None if target_vertices is None or self.head is not None else target_vertices[:, :n_frames] - tpl
        hidden, hidden_lengths = self.encode_audio(audio, audio_lengths)
        offsets, frame_mask, aux = self.decode(hidden, hidden_lengths, n_frames, frame_lengths, subject_index, target)
        vertices = offsets + tpl
        audio_mask = _lengths_mask(hidden_lengths if audio_lengths is not None else None, hidden.shape[1],
                                   hidden.device)
        out = ModelOutput(vertices, offsets, frame_mask, aux, hidden, audio_mask)
        if self.phoneme_head is not None:
            out.phoneme_logits = self.phoneme_head(hidden)
        if lip_reading is None:
            lip_reading = self.training
        if lip_reading and self.lip_reader is not None:
            lips = offsets[:, :, self.lip_index]
            if frame_mask is not None:
                lips = lips * frame_mask[:, :, None, None]
            out.lip_latent, out.lip_log_probs = self.lip_reader(lips, hidden.shape[1], audio_mask)
            if gt_lip_reading and target_vertices is not None:
                gt_lips = (target_vertices[:, :n_frames, self.lip_index] - tpl[..., self.lip_index, :]).detach()
                if frame_mask is not None:
                    gt_lips = gt_lips * frame_mask[:, :, None, None]
                out.gt_lip_latent, out.gt_lip_log_probs = self.lip_reader(gt_lips, hidden.shape[1], audio_mask)
        return out

    @torch.no_grad()
    def predict(self, audio, template=None, n_frames: Optional[int] = None, *, window_seconds: float = 20.0,
                context_seconds: float = 2.0, subject: Optional[int | str] = None,
                silence_gate: Optional[bool] = None) -> np.ndarray:
        """One utterance of any length: 16 kHz mono samples (N,) -> vertices (T, V, 3) float32 numpy.

        ``audio`` is a 1-D array or tensor (integer PCM is scaled into [-1, 1], floats are taken as they are;
        a file goes through :func:`jambatalk.load_audio` first). ``template`` (V, 3) is the neutral face (None:
        the model's own); it is checked for its shape only (:func:`jambatalk.animate` also checks that it is a
        face of this mesh, size and pose). ``n_frames``: the number of frames to predict (default: the audio's length at
        the model's frame rate). ``subject``: the speaking style of a model trained with subjects, an index
        or a training subject's name (None: neutral).

        Audio up to ``window_seconds`` runs in one pass. Longer audio is encoded in overlapping windows
        (``context_seconds`` of context on each side of every kept frame), its Mamba layers run over the
        whole sequence, and its attention within +-window_seconds/2, so time grows linearly with the
        length and memory stays bounded; beyond :attr:`decode_chunk` frames the Mamba layers run in chunks
        carrying their state (the same result as one pass), and the vertex head fills the output in chunks.

        ``silence_gate`` closes the mouth in pauses (:mod:`jambatalk.silence`); None: the model's
        setting (``cfg.silence_gate.enabled``).
        """
        from ..audio import as_samples, is_real_number, is_whole_number

        audio = as_samples(audio, "predict", large_floats="keep")
        if n_frames is not None and not (is_whole_number(n_frames) and n_frames >= 1):
            raise InputError(f"n_frames is {n_frames!r}", "pass a whole number of frames >= 1, or None (the "
                             "audio's length)")
        n_frames = None if n_frames is None else int(n_frames)
        sr, fps = self.cfg.audio.sample_rate, self.cfg.fps
        if len(audio) == 0:
            raise InputError("predict: the audio is empty", "pass the speech to animate")
        if n_frames is None and frames_for_samples(len(audio), fps, sr) < 1:  # 0 frames, or torch's error
            raise InputError(f"predict: the audio lasts {len(audio) / sr * 1000:.1f} ms, shorter than one frame "
                             f"({1000 / fps:.1f} ms at {fps:g} fps)", "pass a longer recording, or n_frames")
        for name, value in (("window_seconds", window_seconds), ("context_seconds", context_seconds)):
            if not (is_real_number(value) and 0 <= value < float("inf")):
                raise InputError(f"{name} is {value!r}", f"pass {name} as a number of seconds >= 0")
        if not (window_seconds >= 1 and window_seconds >= 2 * context_seconds + 0.5):
            raise InputError(f"window_seconds ({window_seconds:g}) must be at least 1 s and 0.5 s more than twice "
                             f"context_seconds ({context_seconds:g}): each window keeps what lies context_seconds "
                             "from its edges", "keep the defaults (20 and 2 s), or pass a longer window")
        subject = self.subject_index(subject)
        if template is not None:  # before the encoder: a template of another mesh failed in the head's reshape
            from ..mesh import check_vertices

            template = check_vertices(template, "template", self.cfg.n_vertices)
        was = self.training
        self.eval()
        try:
            x = self._predict_input(audio, n_frames, window_seconds, context_seconds, subject)
            tpl = self.template if template is None else torch.as_tensor(
                np.require(template, np.float32, "W"), device=self.device).reshape(-1, 3)
            gains = self.silence_gains(audio, x.shape[1]) if self.gates_silence(silence_gate) else None
            return self._predict_output(x, tpl, window_seconds, gains)
        finally:
            self.train(was)

    def _scan_kernel_runs(self, x: torch.Tensor) -> bool:
        """Whether mamba-ssm's kernel runs this model's scans on ``x``: a long sequence then goes through the Mamba
        layers in one pass (the kernel's memory grows linearly with it too), as chunks carrying a state would fall
        back on the PyTorch scan, which the kernel cannot continue."""
        from ..ops.selective_scan import kernel_available, on_cuda

        return on_cuda(x) and self.cfg.decoder.use_kernels != "never" and kernel_available()

    def subject_index(self, subject) -> Optional[int]:
        """The style index of ``subject``: None (neutral), an index 0 .. n_subjects-1, or the name of a training
        subject (``cfg.subjects``); an InputError for anything else, naming the choices."""
        if subject is None:
            return None
        if self.style is None:
            raise InputError(f"subject={subject!r} was given, but this model was trained without subjects (speaking "
                             "styles), so it would be ignored", "leave subject out (None)")
        names = self.cfg.subjects
        if isinstance(subject, str) and subject in names:
            return names.index(subject)
        if isinstance(subject, (int, np.integer)) and not isinstance(subject, bool) \
                and 0 <= subject < self.cfg.n_subjects:
            return int(subject)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise InputError(f"subject {subject!r} is not one of this model's {self.cfg.n_subjects} speaking styles"
                         + (f" ({shown})" if names else ""),
                         f"pass a whole number from 0 to {self.cfg.n_subjects - 1}"
                         + (", a subject's name" if names else "") + ", or None")

    def gates_silence(self, silence_gate: Optional[bool] = None) -> bool:
        """Whether inference closes the mouth in pauses: ``silence_gate``, or the model's setting when None."""
        if silence_gate is None:
            return self.cfg.silence_gate.enabled
        if not isinstance(silence_gate, (bool, np.bool_)):  # bool("off") would be True
            raise InputError(f"silence_gate is {silence_gate!r}", "pass True, False or None (the model's setting)")
        return bool(silence_gate)

    def silence_gains(self, audio, n_frames: int) -> np.ndarray:
        """The silence gate's gain for each of ``n_frames`` frames of 16 kHz ``audio``, (n_frames,)."""
        from ..silence import QuietSpeechCheck, SilenceGate

        cfg, sr = self.cfg.silence_gate, self.cfg.audio.sample_rate
        gains = SilenceGate(cfg, self.cfg.fps, sr).gains_for(audio, n_frames)
        check = QuietSpeechCheck(cfg, self.cfg.fps, sr)
        check.push(audio)
        check.add(gains, final=True, n_frames=n_frames)
        check.warn()
        return gains

    @torch.no_grad()
    def _predict_input(self, audio, n_frames: Optional[int], window_seconds: float, context_seconds: float,
                       subject: Optional[int]) -> torch.Tensor:
        """predict()'s encoder stage: windowed encoding, resampling and projection -> (1, T, D)."""
        # "W": a read-only array (np.frombuffer, a memory map) is copied, as torch cannot share it without a warning
        a = torch.as_tensor(np.require(audio, np.float32, "W"), device=self.device).reshape(1, -1)
        if n_frames is None:
            n_frames = frames_for_samples(a.shape[-1], self.cfg.fps)
        sr = self.cfg.audio.sample_rate
        hidden = self.audio_encoder.encode_windows(a, int(window_seconds * sr), int(context_seconds * sr))
        lengths = torch.tensor([hidden.shape[1]], device=self.device)
        subj = None if subject is None else torch.tensor([subject], device=self.device)
        return self._decoder_input(hidden, lengths, n_frames, subject_index=subj)

    @torch.no_grad()
    def _predict_output(self, x: torch.Tensor, tpl: torch.Tensor, window_seconds: float,
                        gains: Optional[np.ndarray] = None) -> np.ndarray:
        """predict()'s decoder stage: decoder input (1, T, D) and template (V, 3) -> vertices (T, V, 3) numpy;
        ``gains`` (T,), when given, scale each frame's offsets (the silence gate)."""
        n_frames, V = x.shape[1], self.cfg.n_vertices
        g = None if gains is None else torch.as_tensor(gains, dtype=torch.float32, device=self.device)[:, None, None]
        if self.head is None:  # FaceFormer-style: frame by frame, O(T^2) decoder passes
            offsets = self.decoder.generate(x)[0].view(n_frames, V, 3)
            return ((offsets if g is None else offsets * g) + tpl).float().cpu().numpy()
        with self.long_context(int(window_seconds * self.cfg.fps / 2)):
            if n_frames > self.decode_chunk and not self._scan_kernel_runs(x):
                h = self.decoder.forward_long(x, self.decode_chunk)  # Mamba layers in chunks carrying their state
            else:
                h, _ = self.decoder(x)
        out = np.empty((n_frames, V, 3), dtype=np.float32)
        step = max(1, (1 << 24) // (3 * V))  # ~64 MB of float32 per chunk
        w, b = self.head.weight, self.head.bias
        if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (h, w, b, tpl)):
            # the head's product written straight into the returned array, the template added in its bias
            flat, tpl_flat = torch.from_numpy(out).view(n_frames, 3 * V), tpl.reshape(3 * V)
            for s in range(0, n_frames, step):
                dst = flat[s: s + step]
                if g is None:
                    torch.addmm(b + tpl_flat, h[0, s: s + step], w.t(), out=dst)
                else:
                    torch.addmm(b, h[0, s: s + step], w.t(), out=dst).mul_(g[s: s + step, :, 0]).add_(tpl_flat)
            return out
        for s in range(0, n_frames, step):
            offsets = self.head(h[0, s: s + step]).view(-1, V, 3)
            if g is not None:
                offsets = offsets * g[s: s + step]
            out[s: s + offsets.shape[0]] = (offsets + tpl).float().cpu().numpy()
        return out

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write config.json and model.safetensors into ``folder`` (created; replaced atomically)."""
        from ..fileio import atomic_dir

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            self.write_model_files(tmp)
        return folder

    def write_model_files(self, folder: Path) -> None:
        """Write config.json and model.safetensors into the existing ``folder`` (not atomically: for writers that
        add files of their own before they move the folder into place, as the trainer's checkpoints do)."""
        from safetensors.torch import save_file

        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": to_dict(self.cfg)}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": FORMAT})

    @staticmethod
    def read_config(folder: str | os.PathLike) -> ModelConfig:
        """The :class:`~jambatalk.config.ModelConfig` of a model folder."""
        return JambaTalk._read_meta(folder)[0]

    @staticmethod
    def _read_meta(folder: str | os.PathLike) -> tuple[ModelConfig, int]:
        """(config, format version) of a model folder."""
        folder = Path(folder)
        if folder.is_file():
            raise CheckpointError(f"'{folder}' is a file, not a model folder",
                                  "pass the folder that holds config.json and model.safetensors")
        if not folder.is_dir():
            raise CheckpointError(f"model folder '{folder}' does not exist",
                                  "pass a folder written by save_pretrained or by jambatalk train")
        cfg_path = folder / CONFIG_NAME
        saved = [folder / sub for sub in ("best", "last") if (folder / sub / CONFIG_NAME).is_file()]
        if not cfg_path.is_file() and saved:
            raise CheckpointError(f"'{folder}' is a training run folder, not a model folder",
                                  f"pass one of its checkpoints: '{saved[0]}'" + (
                                      f" (or '{saved[1]}', the latest)" if len(saved) > 1 else ""))
        if not cfg_path.is_file():
            raise CheckpointError(f"'{folder}' has no {CONFIG_NAME}; it is not a jambatalk model folder",
                                  "pass a folder written by save_pretrained or by jambatalk train")
        try:
            meta = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"'{cfg_path}' is not valid JSON ({exc})", "the checkpoint is damaged: re-export it") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
            raise CheckpointError(f"'{cfg_path}' is not a jambatalk model config",
                                  "pass a folder written by save_pretrained or by jambatalk train")
        version = meta.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise CheckpointError(f"'{cfg_path}' gives format_version {version!r}, not a whole number",
                                  "re-save the model with save_pretrained, or repair config.json")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"'{folder}' was written by a newer jambatalk (format {meta['format_version']})",
                                  "upgrade jambatalk")
        return from_dict(ModelConfig, meta["model"], "model"), version

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location="cpu",
                        n_vertices: Optional[int] = None) -> JambaTalk:
        """Rebuild a model from a folder written by :meth:`save_pretrained`.

        ``n_vertices``, when given, is checked against the checkpoint's mesh before loading weights.
        """
        folder = Path(folder)
        cfg, version = cls._read_meta(folder)
        dec = cfg.decoder
        top1 = dec.type == "jamba" and dec.moe.top_k == 1 < dec.moe.n_experts and any(k.startswith("moe_") for k in dec.schedule)
        if version < 2 and top1:
            raise CheckpointError(
                f"'{folder}' (format {version}) was trained with top-1 experts used unscaled; this jambatalk scales "
                "the chosen expert by its routing probability (Switch routing), so the model would animate differently",
                f"retrain it, or fine-tune from its weights with train.init_from={folder}")
        if n_vertices is not None and cfg.n_vertices != n_vertices:
            raise CheckpointError(
                f"checkpoint '{folder}' animates meshes of {cfg.n_vertices} vertices, not {n_vertices}",
                "use a checkpoint trained for this mesh, or a template of the checkpoint's topology")
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"'{folder}' has no {WEIGHTS_NAME}", "the checkpoint is incomplete: re-export it")
        state = read_weights(weights, map_location)
        _check_faces(state.get("faces"), cfg.n_vertices, weights)
        cfg.audio.pretrained = None  # the weights below hold the encoder; no hub access needed
        model = cls(cfg)
        model.faces = torch.zeros(tuple(state["faces"].shape), dtype=torch.long) if "faces" in state else model.faces
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise CheckpointError(f"'{weights}' does not match its config ({str(exc).splitlines()[-1].strip()})",
                                  "the checkpoint is damaged or mixed up: re-export it") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"'{weights}' does not match its config ({len(missing)} missing, {len(unexpected)} unexpected "
                f"tensors, e.g. {(missing + unexpected)[:3]})", "the checkpoint is damaged or mixed up: re-export it")
        return model.to(map_location).eval()
