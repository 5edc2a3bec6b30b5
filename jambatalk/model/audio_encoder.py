"""Wav2Vec 2.0 speech encoder with input normalisation and resampling to the mesh frame rate."""

from __future__ import annotations

import contextvars
import functools
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioEncoderConfig
from ..errors import CheckpointError

__all__ = ["AudioEncoder", "resample_features", "frames_for_samples", "receptive_field", "time_major_features"]


def receptive_field(kernels, strides) -> int:
    """Input samples seen by one output frame of a stack of strided convolutions."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf


def frames_for_samples(n_samples: int, fps: float, sample_rate: int = 16000) -> int:
    """Mesh frames covered by ``n_samples`` of audio (whole frames only)."""
    return int(n_samples * fps / sample_rate + 1e-6)


def resample_features(feats: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of (B, N, C) features to (B, length, C) over the same time span."""
    if feats.shape[1] == length:
        return feats
    if feats.shape[1] == 1:
        return feats.expand(-1, length, -1)
    return F.interpolate(feats.transpose(1, 2), size=length, mode="linear", align_corners=True).transpose(1, 2)


def _taps_forward(x: torch.Tensor, taps: torch.Tensor, bias: Optional[torch.Tensor], stride: int) -> torch.Tensor:
    """sum_j x[:, j::stride] @ taps[j] (+ bias): x (B, T, C_in), taps (k, C_in, C_out) -> (B, T_out, C_out), one
    matrix product per tap and batch item on rows read in place."""
    k = taps.shape[0]
    batch, length, _ = x.shape
    n_out = (length - k) // stride + 1
    out = x.new_empty(batch, n_out, taps.shape[2])
    span = stride * (n_out - 1) + 1
    for b in range(batch):
        if bias is None:
            torch.mm(x[b, 0:span:stride], taps[0], out=out[b])
        else:
            torch.addmm(bias, x[b, 0:span:stride], taps[0], out=out[b])
        for j in range(1, k):
            out[b].addmm_(x[b, j: j + span: stride], taps[j])
    return out


class _TapsConv(torch.autograd.Function):
    """:func:`_taps_forward` with its backward written the same way (products on strided rows, no copies)."""

    @staticmethod
    def forward(ctx, x, taps, bias, stride):
        ctx.save_for_backward(x, taps)
        ctx.stride, ctx.has_bias = stride, bias is not None
        return _taps_forward(x, taps, bias, stride)

    @staticmethod
    def backward(ctx, grad_out):
        x, taps = ctx.saved_tensors
        s, k = ctx.stride, taps.shape[0]
        grad_out = grad_out.contiguous()
        n_out = grad_out.shape[1]
        span = s * (n_out - 1) + 1
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_taps = torch.zeros_like(taps) if ctx.needs_input_grad[1] else None
        for b in range(x.shape[0]):
            for j in range(k):
                rows = slice(j, j + span, s)
                if grad_x is not None:
                    grad_x[b, rows].addmm_(grad_out[b], taps[j].t())
                if grad_taps is not None:
                    grad_taps[j].addmm_(x[b, rows].t(), grad_out[b])
        grad_bias = grad_out.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_taps, grad_bias, None


def _conv_time_major(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A 1-d convolution on time-major input: (B, T, C_in) -> (B, T_out, C_out), as ``conv`` on (B, C_in, T).

    Wide inputs are summed over the kernel's taps, one matrix product per tap reading every stride-th
    row of x in place (no copy; the backward the same way); narrow ones (the waveform) gather their
    windows into one product.
    """
    (k,), (s,) = conv.kernel_size, conv.stride
    batch, length, c_in = x.shape
    n_out = (length - k) // s + 1
    if c_in * k <= 64:
        windows = x.unfold(1, k, s).reshape(batch, n_out, c_in * k)  # (B, T_out, C_in * k), as the weight's
        return F.linear(windows, conv.weight.reshape(conv.out_channels, c_in * k), conv.bias)
    return _TapsConv.apply(x, conv.weight.permute(2, 1, 0).contiguous(), conv.bias, s)  # taps (k, C_in, C_out)


_CONV_LAYERS = ("Wav2Vec2NoLayerNormConvLayer", "Wav2Vec2LayerNormConvLayer", "Wav2Vec2GroupNormConvLayer")


def _layer_output_lengths(lengths: torch.Tensor, layer) -> torch.Tensor:
    """Output frames of a conv layer that see only the first ``lengths`` input frames (at least 1)."""
    (k,), (s,) = layer.conv.kernel_size, layer.conv.stride
    return (torch.div(lengths - k, s, rounding_mode="floor") + 1).clamp_min(1)


def _group_stats(x: torch.Tensor, groups: int, valid: Optional[torch.Tensor]):
    """Variance and mean of channel-major x (B, C, T) per item and group of channels, over each item's first
    ``valid[b]`` frames (all frames where ``valid`` is None), repeated to shape (B, C, 1)."""
    batch, channels, length = x.shape
    if valid is None:
        var, mean = torch.var_mean(x.reshape(batch, groups, -1), dim=-1, keepdim=True, unbiased=False)
    else:
        stats = [torch.var_mean(x[b, :, :min(int(n), length)].reshape(groups, -1), dim=-1, keepdim=True,
                                unbiased=False) for b, n in enumerate(valid.tolist())]
        var, mean = torch.stack([v for v, _ in stats]), torch.stack([m for _, m in stats])
    per = channels // groups
    return var.repeat_interleave(per, dim=1), mean.repeat_interleave(per, dim=1)


def _layer_time_major(x: torch.Tensor, layer, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One transformers Wav2Vec2 conv layer (conv, norm, activation) on time-major x (B, T, C_in); a group
    norm normalises item b over its first ``valid[b]`` output frames (all of them where ``valid`` is None)."""
    x = _conv_time_major(x, layer.conv)
    norm = getattr(layer, "layer_norm", None)
    if isinstance(norm, nn.LayerNorm):
        x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    elif isinstance(norm, nn.GroupNorm):  # one group per channel: each channel over time
        if valid is None:
            var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
        else:
            var, mean = (t.transpose(1, 2) for t in _group_stats(x.transpose(1, 2), x.shape[2], valid))
        x = (x - mean) * torch.rsqrt(var + norm.eps)
        if norm.affine:
            x = torch.addcmul(norm.bias, x, norm.weight)
    return layer.activation(x)


def _masked_channel_major(conv_layers, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """transformers' feature encoder, (B, N) -> (B, C, T), with each group norm taken over each item's valid
    frames only (``lengths``: valid samples per item); the other layers are called as they are."""
    x, valid = audio[:, None], lengths
    for layer in conv_layers:
        valid = _layer_output_lengths(valid, layer)
        norm = getattr(layer, "layer_norm", None)
        if not isinstance(norm, nn.GroupNorm):
            x = layer(x)
            continue
        x = layer.conv(x)
        var, mean = _group_stats(x, norm.num_groups, valid)
        x = (x - mean) * torch.rsqrt(var + norm.eps)
        if norm.affine:
            x = x * norm.weight[:, None] + norm.bias[:, None]
        x = layer.activation(x)
    return x


#: output frames per block of the time-local conv layers (3 s of audio at 50 frames/s), so that each layer's
#: output stays in cache: the default model's 10 s took 46 ms in one block, 32-35 ms in blocks of 100-250
#: frames (one CPU thread)
FEATURE_BLOCK_FRAMES = 150


def time_major_features(conv_layers, audio: torch.Tensor, block_frames: int = FEATURE_BLOCK_FRAMES,
                        lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Wav2Vec 2.0's convolutional feature encoder computed time-major: audio (B, N) -> (B, T, C).

    The same layers as transformers' ``Wav2Vec2FeatureEncoder`` (conv, then a layer norm over channels, a
    group norm with one group per channel, or none, then the activation) on the same parameters. Keeping
    time as the row axis, the layer norms read rows and no (B, C, T) tensor is ever transposed and copied,
    which is where that encoder spends about half its time on CPU. Layers after the last group norm (which
    normalises over the whole utterance) see only their receptive field, so they run in blocks of
    ``block_frames`` output frames, each block's input cut from the previous layer's output. With
    ``lengths`` (valid samples per item of a padded batch), a group norm takes each item's statistics over
    its valid frames only, so an item's features do not depend on the padding it was given.
    """
    layers = list(conv_layers)
    split = max((i + 1 for i, layer in enumerate(layers) if isinstance(getattr(layer, "layer_norm", None),
                                                                         nn.GroupNorm)), default=0)
    x, valid = audio[..., None], lengths  # (B, N, 1)
    for layer in layers[:split]:
        valid = None if valid is None else _layer_output_lengths(valid, layer)
        x = _layer_time_major(x, layer, valid)
    local = layers[split:]
    if not local:
        return x
    kernels, strides = [layer.conv.kernel_size[0] for layer in local], [layer.conv.stride[0] for layer in local]
    span, hop, n_out = receptive_field(kernels, strides), math.prod(strides), x.shape[1]
    for k, s in zip(kernels, strides):
        n_out = (n_out - k) // s + 1
    if n_out <= block_frames:
        for layer in local:
            x = _layer_time_major(x, layer)
        return x
    out = x.new_empty(x.shape[0], n_out, local[-1].conv.out_channels)
    for a in range(0, n_out, block_frames):
        b = min(n_out, a + block_frames)
        y = x[:, a * hop: (b - 1) * hop + span]
        for layer in local:
            y = _layer_time_major(y, layer)
        out[:, a:b] = y
    return out


def _time_major_supported(conv_layers) -> bool:
    for i, layer in enumerate(conv_layers):
        if type(layer).__name__ not in _CONV_LAYERS:
            return False
        conv, norm = layer.conv, getattr(layer, "layer_norm", None)
        if conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1 or conv.padding_mode != "zeros":
            return False
        if isinstance(norm, nn.GroupNorm) and norm.num_groups != norm.num_channels:
            return False
        if (i == 0) != (conv.in_channels == 1):
            return False
    return True


#: (feature encoder, valid samples per batch item) for the padded batch that an AudioEncoder is encoding on
#: this thread: transformers' Wav2Vec2Model passes its feature encoder the samples alone
_VALID_SAMPLES: contextvars.ContextVar = contextvars.ContextVar("jambatalk_valid_samples", default=None)


@functools.cache
def _time_major_feature_encoder():
    """transformers' Wav2Vec2FeatureEncoder whose forward runs :func:`time_major_features` on CPU float32 input
    (inference and training) where its layers allow; other devices and dtypes, and gradient checkpointing,
    keep transformers' layers. In a padded batch, its group norms take each item's statistics over the
    item's own samples on every path (transformers' take them over the padding too). Made once, on first use
    (transformers is imported lazily)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    class TimeMajorFeatureEncoder(Wav2Vec2FeatureEncoder):
        time_major = True  # False on an instance: transformers' layers everywhere (for comparisons)
        time_major_supported = False  # set per instance by _use_time_major

        def forward(self, input_values):
            entry = _VALID_SAMPLES.get()
            valid = entry[1] if entry is not None and entry[0] is self else None
            if (self.time_major and self.time_major_supported and input_values.device.type == "cpu"
                    and input_values.dtype == torch.float32 and not (self.gradient_checkpointing and self.training)):
                return time_major_features(self.conv_layers, input_values, lengths=valid).transpose(1, 2)
            if valid is None or not any(isinstance(getattr(layer, "layer_norm", None), nn.GroupNorm)
                                        for layer in self.conv_layers):
                return super().forward(input_values)
            return _masked_channel_major(self.conv_layers, input_values, valid)

    return TimeMajorFeatureEncoder


def _use_time_major(wav2vec) -> None:
    """Give ``wav2vec``'s feature encoder the time-major CPU path where its layers are ones that
    :func:`time_major_features` reproduces, and padding-free group norms; its parameters and their names stay
    as they are."""
    fe, cls = getattr(wav2vec, "feature_extractor", None), _time_major_feature_encoder()
    if type(fe) is cls.__mro__[1]:
        fe.__class__ = cls
        fe.time_major_supported = _time_major_supported(fe.conv_layers)


def _local_pretrained(name: str):
    """Load a Wav2Vec2Model from a local folder or the local hub cache; never downloads."""
    # a hub id is 'owner/name'; an absolute path, one from . or ~, or one of three or more parts is a folder
    if (Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1) \
            and not Path(name).expanduser().exists():
        raise CheckpointError(f"pretrained audio encoder folder '{name}' does not exist",
                              "check model.audio.pretrained: a folder saved by transformers (config.json and weights) or "
                              "a hub id such as facebook/wav2vec2-base-960h; set it to null to use an "
                              "encoder trained from scratch")
    from transformers import Wav2Vec2Model

    try:
        return Wav2Vec2Model.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        where = "folder" if Path(name).exists() else "local hub cache"
        raise CheckpointError(
            f"pretrained audio encoder '{name}' could not be loaded from the {where} ({type(exc).__name__})",
            f"download it once on a connected machine (huggingface-cli download {name}) or pass a local folder "
            "in audio.pretrained; set audio.pretrained to null to use an encoder trained from scratch",
        ) from exc


class AudioEncoder(nn.Module):
    """Raw 16 kHz speech (B, N) -> Wav2Vec 2.0 hidden states (B, N_50Hz, H)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.pretrained:
            self.wav2vec = _local_pretrained(cfg.pretrained)
            self._sync_config_from_model()
        else:
            self.wav2vec = self._build(cfg)
        _use_time_major(self.wav2vec)
        spec_embed = getattr(self.wav2vec, "masked_spec_embed", None)
        if spec_embed is not None:  # SpecAugment is off: the mask embedding is never used
            spec_embed.requires_grad_(False)
        if cfg.freeze_feature_extractor:
            for p in self.wav2vec.feature_extractor.parameters():
                p.requires_grad_(False)
        self.min_samples = receptive_field(cfg.conv_kernel, cfg.conv_stride)

    @staticmethod
    def _build(cfg: AudioEncoderConfig):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        hf = Wav2Vec2Config(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            conv_dim=list(cfg.conv_dim), conv_kernel=list(cfg.conv_kernel), conv_stride=list(cfg.conv_stride),
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
            do_stable_layer_norm=cfg.do_stable_layer_norm, feat_extract_norm=cfg.feat_extract_norm,
            apply_spec_augment=False, mask_time_prob=0.0, layerdrop=0.0, vocab_size=32,
        )
        return Wav2Vec2Model(hf)

    def _sync_config_from_model(self) -> None:
        """Record the loaded model's true size in our config so checkpoints rebuild it without the hub."""
        hf = self.wav2vec.config
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm",
                    "feat_extract_norm"):
            setattr(self.cfg, key, getattr(hf, key))
        self.cfg.conv_dim, self.cfg.conv_kernel = list(hf.conv_dim), list(hf.conv_kernel)
        self.cfg.conv_stride = list(hf.conv_stride)
        self.wav2vec.config.apply_spec_augment = False

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    def normalize(self, audio: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Zero mean, unit variance per utterance over its valid samples (padding stays zero)."""
        if lengths is None:
            mean = audio.mean(-1, keepdim=True)
            var = audio.var(-1, keepdim=True, unbiased=False)
            return (audio - mean) / torch.sqrt(var + 1e-7)
        mask = torch.arange(audio.shape[-1], device=audio.device)[None] < lengths[:, None]
        n = lengths[:, None].clamp_min(1).to(audio.dtype)
        mean = (audio * mask).sum(-1, keepdim=True) / n
        var = (((audio - mean) * mask) ** 2).sum(-1, keepdim=True) / n
        return (audio - mean) / torch.sqrt(var + 1e-7) * mask

    def feature_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = lengths
        for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
            out = torch.div(out - k, s, rounding_mode="floor") + 1
        return out.clamp_min(1)

    def n_frames(self, n_samples: int) -> int:
        """Encoder frames produced for ``n_samples`` of audio in one pass."""
        return int(self.feature_lengths(torch.tensor([max(n_samples, self.min_samples)]))[0])

    @torch.no_grad()
    def encode_windows(self, audio: torch.Tensor, window: int, context: int) -> torch.Tensor:
        """Encode one long utterance (1, N) in overlapping windows with bounded memory.

        Each window spans ``window`` samples; of its frames only the middle part, ``context`` samples
        away from an inner window edge, is kept, so every kept frame sees at least ``context`` samples
        of audio on each side. Audio no longer than ``window`` is encoded in one pass (identical to
        ``forward``). Normalisation uses the whole utterance's statistics, as a one-pass encoding does.
        """
        hop = self.cfg.hop_length
        N = audio.shape[-1]
        if N <= window:
            return self(audio)[0]
        if self.cfg.normalize_input:
            audio = self.normalize(audio, None)
        window, context = (window // hop) * hop, (context // hop) * hop
        stride = window - 2 * context
        if stride <= 0:
            raise ValueError(f"window {window} must exceed twice the context {context}")
        total = self.n_frames(N)
        out = None
        start = 0
        while True:
            end = min(N, start + window)
            seg = audio[:, start:end]
            if seg.shape[-1] < self.min_samples:
                seg = F.pad(seg, (0, self.min_samples - seg.shape[-1]))
            feats = self.wav2vec(seg).last_hidden_state
            if out is None:
                out = feats.new_zeros(audio.shape[0], total, feats.shape[-1])
            first = start // hop
            keep_from = 0 if start == 0 else context // hop
            keep_to = feats.shape[1] if end == N else (window - context) // hop
            lo, hi = first + keep_from, min(total, first + keep_to)
            out[:, lo:hi] = feats[:, keep_from: keep_from + hi - lo]
            if end == N:
                break
            start += stride
        return out

    def forward(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        """audio (B, N) at 16 kHz -> (hidden (B, Nf, H), feature lengths (B,))."""
        if self.cfg.normalize_input:
            audio = self.normalize(audio, lengths)
        if audio.shape[-1] < self.min_samples:
            audio = F.pad(audio, (0, self.min_samples - audio.shape[-1]))
        mask, token = None, None
        if lengths is not None and bool((lengths < audio.shape[-1]).any()):
            mask = (torch.arange(audio.shape[-1], device=audio.device)[None] < lengths[:, None]).long()
            token = _VALID_SAMPLES.set((self.wav2vec.feature_extractor, lengths))
        try:
            out = self.wav2vec(audio, attention_mask=mask).last_hidden_state
        finally:
            if token is not None:
                _VALID_SAMPLES.reset(token)
        if lengths is None:
            flen = torch.full((audio.shape[0],), out.shape[1], device=audio.device, dtype=torch.long)
        else:
            flen = self.feature_lengths(lengths.clamp_min(self.min_samples)).clamp_max(out.shape[1])
        return out, flen


