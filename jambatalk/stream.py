"""Real-time streaming: push audio as it arrives, get the mesh frames that became final.

    >>> stream = jambatalk.Stream(lookahead=0.3)
    >>> for chunk in microphone_chunks():          # 16 kHz mono float, any chunk size
    ...     frames = stream.push(chunk)           # (n, V, 3), possibly n == 0
    >>> frames = stream.flush()                   # the frames held back at the end

How it streams (and what :meth:`Stream.offline` reproduces in one pass):

* the audio encoder runs block by block: every ``block`` seconds of audio it encodes one window
  made of ``context`` seconds before the block, the block, and ``lookahead`` seconds after it,
  and keeps the block's features. Each window is normalised with the mean and variance of the
  ``norm_seconds`` of audio that end where it ends (causal statistics instead of the whole
  utterance's);
* features become mesh frames at a fixed rate (frame i reads the 50 Hz features at i * 50 / fps,
  linearly interpolated);
* the decoder runs step by step on its caches (Mamba states, attention keys within the window).
  Its attention must be causal or windowed: a bidirectional decoder cannot stream.

Every frame is computed once, the caches are bounded, and the work per second of audio is the same
at the first minute and the hundredth. Latency is at most block + lookahead + the decoder's own
lookahead (:attr:`Stream.latency`), plus compute time.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .audio import SAMPLE_RATE, as_samples, is_real_number
from .errors import ConfigError, InputError
from .model.audio_encoder import frames_for_samples

__all__ = ["Stream"]


class Stream:
    """Incremental animation of a live 16 kHz mono signal.

    Args:
        model: a :class:`~jambatalk.model.JambaTalk`, a model folder, or None (the built-in model).
        template: the neutral face (anything :func:`jambatalk.animate` takes); None: the model's own.
        lookahead: seconds of audio after a block that its encoding sees (>= 0). Latency grows with it.
        block: seconds of audio encoded per encoder call.
        context: seconds of audio before a block that its encoding sees.
        norm_seconds: seconds of audio whose statistics normalise each window.
        subject: speaking style of a model trained with subjects: an index or a training subject's name
            (None: neutral).
        silence_gate: close the mouth in pauses (:mod:`jambatalk.silence`); None: the model's setting.
            Its gains read ``attack`` seconds of future audio, which the encoder lookahead usually covers.
        device: torch device (default: a loaded model's own; for a folder or None, CUDA when available, else CPU).
    """

    def __init__(self, model=None, template=None, lookahead: float = 0.3, *, block: float = 0.4,
                 context: float = 1.0, norm_seconds: float = 10.0, subject: Optional[int | str] = None,
                 silence_gate: Optional[bool] = None, device=None):
        from .api import _as_model
        from .silence import QuietSpeechCheck, SilenceGate

        net = _as_model(model, device)
        if net.head is None:
            raise ConfigError("this model has the FaceFormer-style autoregressive decoder, which Stream does not run",
                              "stream a JambaTalk model (decoder.type jamba)")
        if not net.streamable:
            raise ConfigError("this model's decoder attention is bidirectional (it sees the whole future), so it "
                              "cannot stream",
                              "use a model trained with decoder.attention_span 'window' or 'causal' (the built-in "
                              "default model is one)")
        for name, value, usual in (("lookahead", lookahead, 0.3), ("context", context, 1.0), ("block", block, 0.4),
                                   ("norm_seconds", norm_seconds, 10)):
            if not is_real_number(value):
                raise InputError(f"Stream {name} is {value!r}, not a number", f"pass {name} in seconds, e.g. {usual}")
        for name, value in (("lookahead", lookahead), ("context", context)):
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(f"Stream {name} is {value}", f"pass {name} >= 0 seconds")
        if not (0 < block < math.inf) or not (0 < norm_seconds < math.inf):
            raise InputError(f"Stream block ({block}) and norm_seconds ({norm_seconds}) must be positive",
                             "pass durations in seconds, e.g. block=0.4, norm_seconds=10")
        self.model = net.eval()
        enc = net.audio_encoder
        self.hop = enc.cfg.hop_length
        self.rf_extra = enc.min_samples - self.hop  # samples past a frame's hop that its receptive field reads
        sr = enc.cfg.sample_rate
        self.block_frames = max(1, int(round(block * sr / self.hop)))
        self.context_samples = int(round(context * sr / self.hop)) * self.hop
        self.lookahead_samples = int(round(lookahead * sr / self.hop)) * self.hop
        self.norm_samples = max(self.hop, int(round(norm_seconds * sr)))
        self.normalize = bool(enc.cfg.normalize_input)
        self.feature_rate = sr / self.hop
        self.subject = net.subject_index(subject)
        faces = None
        if template is None:
            tpl = net.template
        else:
            from .mesh import load_template_for

            tpl, faces = load_template_for(template, net)
        if faces is None and net.faces.numel():
            faces = net.faces.cpu().numpy()
        self.faces = faces
        self.template = torch.as_tensor(np.asarray(tpl.detach().cpu() if torch.is_tensor(tpl) else tpl,
                                                   dtype=np.float32), device=net.device).reshape(-1, 3)
        self.gate = SilenceGate(net.cfg.silence_gate, net.fps, sr) if net.gates_silence(silence_gate) else None
        self._quiet = None if self.gate is None else QuietSpeechCheck(net.cfg.silence_gate, net.fps, sr)
        self.reset()

    # -- properties ----------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return float(self.model.fps)

    @property
    def latency(self) -> float:
        """Worst-case seconds between a sound and the frame showing it, before compute time: a full
        block, the encoder lookahead and receptive field, the interpolation step and the decoder's lookahead
        (or, when longer, the frame plus the silence gate's attack)."""
        audio = (self.block_frames * self.hop + self.rf_extra + self.lookahead_samples) / SAMPLE_RATE
        model = audio + 1.0 / self.feature_rate + self.model.decoder.delay / self.fps
        if self.gate is None:
            return model
        return max(model, (self.gate.delay + 1) / self.fps)  # a gain waits for the end of its attack

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new utterance."""
        self._buf = np.zeros(0, dtype=np.float32)  # retained samples, from absolute index _buf_start
        self._buf_start = 0
        self._csum = np.zeros(1, dtype=np.float64)  # prefix sums at absolute indices _buf_start .. end
        self._csq = np.zeros(1, dtype=np.float64)
        self._n = 0  # samples pushed
        self._blocks = 0  # encoder blocks done
        self._feats: Optional[torch.Tensor] = None  # the last features (for interpolation), (k, H)
        self._feat_start = 0  # absolute index of _feats[0]
        self._next_frame = 0  # next mesh frame to feed the decoder
        self._frames_out = 0
        self._cache = self.model.decoder.allocate_cache(1, device=self.model.device)
        self._closed = False
        self._held = self._empty_offsets()  # offsets awaiting their silence-gate gain
        self._gains = np.zeros(0, dtype=np.float32)  # gains awaiting their frame
        if self.gate is not None:
            self.gate.reset()
            self._quiet.reset()

    @property
    def _n_feats(self) -> int:
        """Features computed so far."""
        return 0 if self._feats is None else self._feat_start + self._feats.shape[0]

    # -- the shared computations (streaming and offline call the same code) ---------------------
    def _block_end(self, k: int) -> int:
        """The sample at which block ``k``'s window ends when the audio goes on (its lookahead included)."""
        return (k + 1) * self.block_frames * self.hop + self.rf_extra + self.lookahead_samples

    def _window(self, k: int, end_limit: int) -> tuple[int, int]:
        start = max(0, k * self.block_frames * self.hop - self.context_samples)
        return start, min(end_limit, self._block_end(k))

    def _encode(self, seg: np.ndarray, stats: tuple[float, float]) -> torch.Tensor:
        """One window (samples) -> its features (n, H)."""
        x = torch.as_tensor(seg, device=self.model.device)[None]
        if self.normalize:
            mean, var = stats
            x = (x - mean) / math.sqrt(var + 1e-7)
        enc = self.model.audio_encoder
        if x.shape[-1] < enc.min_samples:
            x = F.pad(x, (0, enc.min_samples - x.shape[-1]))
        return enc.wav2vec(x).last_hidden_state[0]

    @staticmethod
    def _stats(csum_lo, csum_hi, csq_lo, csq_hi, n) -> tuple[float, float]:
        n = max(int(n), 1)
        mean = (csum_hi - csum_lo) / n
        return float(mean), float(max((csq_hi - csq_lo) / n - mean * mean, 0.0))

    def _positions(self, i0: int, i1: int) -> np.ndarray:
        """Feature positions read by mesh frames i0 .. i1-1 (fixed rate)."""
        return np.arange(i0, i1, dtype=np.float64) * (self.feature_rate / self.fps)

    def _frames_ready(self, n_feats: int, final: bool, n_frames_total: Optional[int]) -> int:
        """How many mesh frames (from 0) can be interpolated from ``n_feats`` features."""
        if final:
            return n_frames_total
        # frame i needs feature floor(pos) + 1 (or exactly floor(pos) when pos is a whole number)
        return max(0, int(math.floor((n_feats - 1) * self.fps / self.feature_rate + 1e-9)) + 1) if n_feats else 0

    def _interpolate(self, feats: torch.Tensor, feat_start: int, i0: int, i1: int, last_feat: int) -> torch.Tensor:
        pos = np.minimum(self._positions(i0, i1), last_feat)
        lo = np.floor(pos + 1e-9).astype(np.int64)
        hi = np.minimum(lo + 1, last_feat)
        w = torch.as_tensor((pos - lo)[:, None], dtype=feats.dtype, device=feats.device)
        a = feats[torch.as_tensor(lo - feat_start, device=feats.device)]
        b = feats[torch.as_tensor(hi - feat_start, device=feats.device)]
        return a * (1 - w) + b * w

    def _decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        net = self.model
        x = net.audio_proj(x)[None]
        if net.style is not None and self.subject is not None:
            x = x + net.style(torch.tensor([self.subject], device=x.device))[:, None]
        return x

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.model.cfg.n_vertices, 3), dtype=np.float32)

    def _empty_offsets(self) -> torch.Tensor:
        return torch.zeros(0, self.model.cfg.n_vertices, 3, device=self.model.device)

    def _offsets(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[1] == 0:
            return self._empty_offsets()
        return self.model.head(h[0]).view(-1, self.model.cfg.n_vertices, 3)

    def _to_vertices(self, offsets: torch.Tensor, gains: Optional[np.ndarray] = None) -> np.ndarray:
        if gains is not None:
            offsets = offsets * torch.as_tensor(gains, device=offsets.device)[:, None, None]
        return (offsets + self.template).float().cpu().numpy()

    def _release(self, offsets: torch.Tensor, final: bool, n_total: Optional[int]) -> np.ndarray:
        """The frames whose silence-gate gains are known (all of them without a gate)."""
        if self.gate is None:
            return self._to_vertices(offsets)
        self._held = torch.cat([self._held, offsets])
        gains = self.gate.gains(final, n_total)
        self._quiet.add(gains, final, n_total)
        self._gains = np.concatenate([self._gains, gains])
        n = min(len(self._held), len(self._gains))
        out = self._to_vertices(self._held[:n], self._gains[:n])
        self._held, self._gains = self._held[n:], self._gains[n:]
        return out

    # -- streaming -----------------------------------------------------------------------------
    @torch.no_grad()
    def push(self, samples) -> np.ndarray:
        """Feed 16 kHz mono float samples (any length); returns the frames that became final, (n, V, 3)."""
        if self._closed:
            raise InputError("this stream was flushed", "call reset() to start a new utterance")
        x = as_samples(samples, "Stream.push", large_floats="refuse")
        if x.size:
            if self.gate is not None:
                self.gate.push(x)
                self._quiet.push(x)
            self._buf = np.concatenate([self._buf, x])
            self._csum = np.concatenate([self._csum, self._csum[-1] + np.cumsum(x, dtype=np.float64)])
            self._csq = np.concatenate([self._csq, self._csq[-1] + np.cumsum(np.square(x, dtype=np.float64))])
            self._n += x.size
        return self._advance(final=False)

    @torch.no_grad()
    def flush(self) -> np.ndarray:
        """End of the utterance: returns every frame still held back; the stream then needs :meth:`reset`."""
        if self._closed:
            return self._empty()
        out = self._advance(final=True)
        self._closed = True
        if self._quiet is not None:
            self._quiet.warn()  # over the whole utterance, as animate() does
        return out

    def _prefix(self, arr: np.ndarray, index: int) -> float:
        return float(arr[index - self._buf_start])

    def _advance(self, final: bool) -> np.ndarray:
        enc = self.model.audio_encoder
        total_feats = enc.n_frames(self._n) if final else None
        new_feats = []
        while True:
            k = self._blocks
            lo_frame = k * self.block_frames
            if final and lo_frame >= total_feats:
                break
            start, end = self._window(k, self._n)
            if not final and end < self._block_end(k):
                break  # the block's lookahead has not arrived yet
            s0 = max(0, end - self.norm_samples)
            stats = self._stats(self._prefix(self._csum, s0), self._prefix(self._csum, end),
                                self._prefix(self._csq, s0), self._prefix(self._csq, end), end - s0)
            feats = self._encode(self._buf[start - self._buf_start: end - self._buf_start], stats)
            first = start // self.hop
            hi_frame = (k + 1) * self.block_frames
            if final:
                hi_frame = min(hi_frame, total_feats)
            new_feats.append(feats[lo_frame - first: hi_frame - first])
            self._blocks += 1
        if new_feats:
            keep = self._feats if self._feats is not None else new_feats[0][:0]
            self._feats = torch.cat([keep] + new_feats, dim=0)
        n_total = frames_for_samples(self._n, self.fps) if final else None
        ready = self._frames_ready(self._n_feats, final, n_total)
        h_parts = []
        if ready > self._next_frame and self._n_feats:
            x = self._interpolate(self._feats, self._feat_start, self._next_frame, ready, self._n_feats - 1)
            self._next_frame = ready
            h_parts.append(self.model.decoder.step(self._decoder_input(x), self._cache))
        if final:
            like = torch.zeros(1, 0, self.model.cfg.decoder.d_model, device=self.model.device)
            h_parts.append(self.model.decoder.flush(self._cache, like))
        offsets = self._offsets(torch.cat(h_parts, dim=1)) if h_parts else self._empty_offsets()
        out = self._release(offsets, final, n_total)
        self._frames_out += len(out)
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop audio and features that no future window, statistic or interpolation reads."""
        k = self._blocks
        next_start, _ = self._window(k, 1 << 62)
        # every future window ends at or after the samples pushed so far (at flush: exactly there)
        keep_from = max(0, min(next_start, self._n - self.norm_samples))
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._csum, self._csq = self._csum[drop:], self._csq[drop:]
            self._buf_start = keep_from
        if self._feats is not None and self._feats.shape[0] > 2:
            pos = self._positions(self._next_frame, self._next_frame + 1)[0]
            need = max(0, int(math.floor(pos + 1e-9)) - 1)
            cut = need - self._feat_start
            if cut > 0:
                self._feats = self._feats[cut:]
                self._feat_start += cut

    # -- the same computation in one pass ------------------------------------------------------
    @torch.no_grad()
    def offline(self, audio) -> np.ndarray:
        """What pushing ``audio`` (16 kHz mono) in any chunks and flushing returns, computed in one pass
        (the whole decoder at once); (T, V, 3). Does not touch the stream's state."""
        x = as_samples(audio, "Stream.offline")
        N = len(x)
        enc = self.model.audio_encoder
        csum = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
        csq = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
        total = enc.n_frames(N)
        parts, k = [], 0
        while k * self.block_frames < total:
            start, end = self._window(k, N)
            s0 = max(0, end - self.norm_samples)
            feats = self._encode(x[start:end], self._stats(csum[s0], csum[end], csq[s0], csq[end], end - s0))
            first = start // self.hop
            lo, hi = k * self.block_frames, min((k + 1) * self.block_frames, total)
            parts.append(feats[lo - first: hi - first])
            k += 1
        feats = torch.cat(parts, dim=0)
        T = frames_for_samples(N, self.fps)
        xin = self._decoder_input(self._interpolate(feats, 0, 0, T, feats.shape[0] - 1))
        h, _ = self.model.decoder(xin)
        gains = None if self.gate is None else self.model.silence_gains(x, T)
        return self._to_vertices(self._offsets(h), gains)
