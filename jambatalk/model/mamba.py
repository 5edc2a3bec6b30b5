"""The Mamba-1 mixer: gated selective state-space layer with a causal depthwise convolution.

    x, z = in_proj(u)                      # (B, L, 2 * d_inner)
    x = silu(causal_depthwise_conv(x))     # kernel d_conv, sees the past only
    dt, B, C = x_proj(x)                   # input-dependent step size and state maps
    y = selective_scan(x, dt_proj(dt), A, B, C, D, z=z, delta_bias, softplus)
    out = out_proj(y)

Inference on CPU (no gradient, float32, ``use_kernels="auto"``) runs everything between the two
projections in the compiled kernels of :mod:`jambatalk.ops.cpu_scan` where they build
(:func:`~jambatalk.ops.cpu_scan.mamba_inner`), in the time-major layout the projections use; elsewhere
the PyTorch path below runs. The two agree to float32 rounding. On CUDA the PyTorch path hands the conv
and SiLU to causal-conv1d's fused kernel and the scan to mamba-ssm's where those are installed (the
``kernels`` extra; ``use_kernels`` "auto" or "always").

Streaming: :meth:`MambaMixer.allocate_cache` gives a :class:`MambaCache` (the last ``d_conv - 1``
conv inputs and the SSM state); :meth:`MambaMixer.step` consumes a chunk of any length and
updates the cache, so feeding a sequence chunk by chunk equals one :meth:`MambaMixer.forward`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DecoderConfig
from ..errors import InputError
from ..ops import cpu_scan
from ..ops.selective_scan import autocast_on, conv_kernel_for, selective_scan
from .blocks import kept_derived

__all__ = ["MambaMixer", "MambaCache"]

# mamba-ssm's step-size initialisation: dt log-uniform in [DT_MIN, DT_MAX], floored at DT_FLOOR
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class MambaKernelWeights(NamedTuple):
    """What the compiled inference path of a :class:`MambaMixer` reads: its projections' weights as they are
    and the rest in the kernels' layout."""

    in_weight: torch.Tensor
    in_bias: Optional[torch.Tensor]
    inner: cpu_scan.MambaWeights
    out_weight: torch.Tensor
    out_bias: Optional[torch.Tensor]


#: MambaKernelWeights' sources, in _kernel_layout's order
_KERNEL_PARAMETERS = ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                      "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight", "out_proj.bias")


def _kernel_layout(in_weight, in_bias, conv_weight, conv_bias, x_proj_weight, dt_weight, dt_bias, A_log, D,
                   out_weight, out_bias) -> MambaKernelWeights:
    inner = cpu_scan.mamba_weights(conv_weight, conv_bias, x_proj_weight, dt_weight, dt_bias,
                                   -torch.exp(A_log.detach()), D)
    return MambaKernelWeights(in_weight.detach(), None if in_bias is None else in_bias.detach(), inner,
                              out_weight.detach(), None if out_bias is None else out_bias.detach())


@dataclass
class MambaCache:
    """Streaming state of one :class:`MambaMixer`.

    Attributes:
        conv_state: (batch, d_inner, d_conv - 1), the last conv inputs (zeros before the start).
        ssm_state: (batch, d_inner, d_state), the state after the last step.
        position: number of time steps consumed so far.
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    position: int = 0


class MambaMixer(nn.Module):
    """Mamba-1 mixer mapping (batch, L, d_model) to (batch, L, d_model), causal in time.

    Built from a :class:`~jambatalk.config.DecoderConfig` (``d_model``, ``d_state``, ``d_conv``,
    ``expand``, ``dt_rank``, ``use_kernels``).
    """

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.d_inner = cfg.d_inner
        self.d_state = cfg.d_state
        self.d_conv = cfg.d_conv
        self.dt_rank = cfg.resolved_dt_rank
        self.use_kernels = cfg.use_kernels

        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=self.d_conv, groups=self.d_inner,
                                padding=self.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation of the SSM parameters (A_log, D, dt_proj).

        A = -(1, 2, ..., d_state) on every channel (S4D-real); D = 1; dt_proj's bias is the inverse
        softplus of a step size drawn log-uniformly in [1e-3, 1e-1], its weight uniform in
        +-dt_rank^-0.5. These tensors carry ``_no_weight_decay`` / ``_no_reinit`` marks for optimisers
        and model-wide initialisers.
        """
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(A).expand(self.d_inner, -1))
        self.D.fill_(1.0)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_inner, device=self.dt_proj.bias.device)
        dt = torch.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)).clamp(min=DT_FLOOR)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) == dt
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True

    # ------------------------------------------------------------------ core

    def _ssm(self, x: torch.Tensor, z: torch.Tensor, initial_state: Optional[torch.Tensor] = None,
             return_last_state: bool = False):
        """x, z: (batch, d_inner, L) after the conv / the gate; runs the selective scan."""
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        return selective_scan(
            x, delta, A, B.transpose(1, 2), C.transpose(1, 2), D=self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=return_last_state, initial_state=initial_state, use_kernels=self.use_kernels,
        )

    def _compiled_applies(self, x: torch.Tensor) -> bool:
        """Whether this call may take the compiled CPU path: inference (no gradient wanted) on float32 CPU
        tensors with ``use_kernels="auto"``, where the library builds."""
        if self.use_kernels != "auto" or x.device.type != "cpu" or x.dtype != torch.float32 or autocast_on("cpu"):
            return False  # under autocast in_proj would hand the kernels bfloat16 rows
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False
        return (self.d_state <= cpu_scan.MAX_STATE and self._parameters["A_log"].dtype == torch.float32
                and cpu_scan.available())

    def _kernel_weights(self) -> MambaKernelWeights:
        """The projections' weights and the kernels' layout of the rest (:func:`~jambatalk.ops.cpu_scan.mamba_weights`),
        kept between calls until a parameter changes (:func:`~jambatalk.model.blocks.kept_derived`)."""
        return kept_derived(self, "_kernel_weights_kept", _KERNEL_PARAMETERS, _kernel_layout)

    def _compiled(self, x: torch.Tensor, cache: Optional[MambaCache] = None):
        """The compiled CPU path: (output (batch, L, d_model), in_proj's output, the last SSM state)."""
        weights = self._kernel_weights()
        xz = F.linear(x, weights.in_weight, weights.in_bias)  # (batch, L, 2 * d_inner), time-major as the kernels read it
        y, state = cpu_scan.mamba_inner_prepared(xz, weights.inner,
                                                 conv_state=None if cache is None else cache.conv_state,
                                                 ssm_state=None if cache is None else cache.ssm_state)
        return F.linear(y, weights.out_weight, weights.out_bias), xz, state

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise InputError(f"MambaMixer expects (batch, length, {self.d_model}), got {tuple(x.shape)}",
                             "pass a 3-d tensor whose last axis is the model width")

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mix a whole sequence: (batch, L, d_model) -> (batch, L, d_model).

        ``key_padding_mask`` is accepted for the shared mixer interface and ignored: padding sits
        at the end of a sequence and the layer is causal, so it never reaches a real frame.
        """
        self._check_input(x)
        if self._compiled_applies(x):
            return self._compiled(x)[0]
        length = x.shape[1]
        xz = self.in_proj(x).transpose(1, 2)  # (batch, 2 * d_inner, L)
        x_in, z = xz.chunk(2, dim=1)
        conv = conv_kernel_for(x_in, self.d_conv, self.use_kernels)
        if conv is not None:  # channels-last x_in, as causal-conv1d reads it
            x_conv = conv(x_in, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        else:
            x_conv = F.silu(self.conv1d(x_in)[..., :length])
        y = self._ssm(x_conv, z)
        return self.out_proj(y.transpose(1, 2))

    # ------------------------------------------------------------------ streaming

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> MambaCache:
        """A zero cache for ``batch_size`` streams (the state before any input)."""
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        return MambaCache(
            conv_state=torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32),
            position=0,
        )

    def step(self, x: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        """Mix the next chunk (batch, l, d_model) continuing from ``cache``, which is updated in place.

        Outputs are final at once (no lookahead): (batch, l, d_model). An empty chunk returns an
        empty result and leaves the cache as it was.
        """
        self._check_input(x)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape)
        if cache.ssm_state.shape[0] != x.shape[0]:
            raise InputError(f"MambaMixer.step: the cache holds {cache.ssm_state.shape[0]} streams but the chunk "
                             f"has batch size {x.shape[0]}", "allocate the cache with the chunk's batch size")
        if self._compiled_applies(x):
            out, xz, state = self._compiled(x, cache)
            # the conv's next inputs-before: the last d_conv - 1 of (old ones, this chunk's)
            keep, length = self.d_conv - 1, x.shape[1]
            tail = xz[:, max(0, length - keep):, : self.d_inner].transpose(1, 2).to(cache.conv_state.dtype)
            window = torch.cat([cache.conv_state, tail], dim=2)
            cache.conv_state = window[..., window.shape[2] - keep:]
            cache.ssm_state = state
            cache.position += x.shape[1]
            return out
        xz = self.in_proj(x).transpose(1, 2)
        x_in, z = xz.chunk(2, dim=1)
        window = torch.cat([cache.conv_state.to(x_in.dtype), x_in], dim=2)  # (batch, d_inner, d_conv - 1 + l)
        x_conv = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner))
        y, state = self._ssm(x_conv, z, initial_state=cache.ssm_state, return_last_state=True)
        cache.conv_state = window[..., window.shape[2] - (self.d_conv - 1):]
        cache.ssm_state = state
        cache.position += x.shape[1]
        return self.out_proj(y.transpose(1, 2))
