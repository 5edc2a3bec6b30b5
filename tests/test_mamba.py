"""The Mamba mixer: shapes, causality, streaming equals one pass, gradients reach every parameter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import scan_inputs

from jambatalk.config import DecoderConfig
from jambatalk.errors import InputError, MissingDependencyError
from jambatalk.model.mamba import MambaCache, MambaMixer


def _mixer(seed: int = 0, **overrides) -> MambaMixer:
    torch.manual_seed(seed)
    kw = {"d_model": 16, "d_state": 4, "d_conv": 4, "expand": 2, "schedule": ["mamba"]}
    kw.update(overrides)
    return MambaMixer(DecoderConfig(**kw))


def test_forward_shape_and_dtype():
    m = _mixer()
    x = torch.randn(3, 29, 16)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(m(x, key_padding_mask=torch.ones(3, 29, dtype=torch.bool)), y)  # mask ignored


def test_init_follows_mamba():
    m = _mixer(d_model=32, d_state=8)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1, 9.0)).expand(64, 8))
    assert torch.equal(m.D.detach(), torch.ones(64))
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    assert m.dt_rank == math.ceil(32 / 16) and m.x_proj.out_features == m.dt_rank + 16


def test_perturbing_the_future_leaves_the_past_unchanged():
    m = _mixer()
    x = torch.randn(2, 40, 16)
    t = 23
    x2 = x.clone()
    x2[:, t] += torch.randn(2, 16)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.allclose(y[:, :t], y2[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(y[:, t:], y2[:, t:], atol=1e-4)


def test_no_gradient_from_past_outputs_to_future_inputs():
    m = _mixer()
    x = torch.randn(2, 40, 16, requires_grad=True)
    t = 17
    m(x)[:, :t].sum().backward()
    assert x.grad[:, t:].abs().max().item() == 0.0
    assert x.grad[:, :t].abs().max().item() > 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_in_random_chunks_equals_forward(seed):
    m = _mixer(seed)
    gen = torch.Generator().manual_seed(seed)
    length = 61
    x = torch.randn(2, length, 16, generator=gen)
    with torch.no_grad():
        full = m(x)
        cache = m.allocate_cache(2)
        sizes = [1]  # always include single-frame steps
        while sum(sizes) < length:
            sizes.append(int(torch.randint(1, 12, (1,), generator=gen)))
        outs, pos = [], 0
        for size in sizes:
            chunk = x[:, pos:pos + size]
            outs.append(m.step(chunk, cache))
            pos += chunk.shape[1]
            assert cache.position == pos
        streamed = torch.cat(outs, dim=1)
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-5, rtol=1e-5)


def test_step_one_frame_at_a_time_equals_forward():
    m = _mixer(3, d_conv=2)
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        cache = m.allocate_cache(1)
        streamed = torch.cat([m.step(x[:, i:i + 1], cache) for i in range(12)], dim=1)
        assert torch.allclose(streamed, m(x), atol=1e-5, rtol=1e-5)


def test_cache_layout_and_empty_step():
    m = _mixer()
    cache = m.allocate_cache(2)
    assert isinstance(cache, MambaCache)
    assert cache.conv_state.shape == (2, 32, 3) and cache.ssm_state.shape == (2, 32, 4) and cache.position == 0
    out = m.step(torch.randn(2, 0, 16), cache)
    assert out.shape == (2, 0, 16) and cache.position == 0
    with pytest.raises(InputError, match="batch size"):
        m.step(torch.randn(3, 4, 16), cache)
    with pytest.raises(InputError, match="expects"):
        m(torch.randn(2, 4, 15))


def test_every_parameter_gets_a_gradient():
    m = _mixer()
    m(torch.randn(2, 25, 16)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max().item() > 0, name


def test_always_kernels_on_cpu_is_a_clear_error():
    m = _mixer(use_kernels="always")
    with pytest.raises(MissingDependencyError, match="kernels"):
        m(torch.randn(1, 5, 16))


def _fake_kernels(monkeypatch):
    """Stand-ins for causal-conv1d's and mamba-ssm's CUDA kernels, with their documented signatures and
    layouts, computing the reference result; tensors count as on CUDA. Returns the calls they got."""
    import importlib
    import sys
    import types

    from jambatalk.ops.selective_scan import selective_scan_ref

    scan_ops = importlib.import_module("jambatalk.ops.selective_scan")  # the module: jambatalk.ops.selective_scan is the function

    calls = []

    def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                         final_states_out=None, activation=None):
        dim, width = weight.shape
        assert x.dim() == 3 and x.shape[1] == dim and 2 <= width <= 4 and activation in (None, "silu", "swish")
        assert x.stride(1) == 1 or x.stride(2) == 1
        assert bias is None or tuple(bias.shape) == (dim,)
        calls.append("conv")
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)[..., : x.shape[-1]]
        return out if activation is None else F.silu(out)

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        batch, dim, length = u.shape
        assert delta.shape == u.shape and (z is None or z.shape == u.shape) and A.shape[0] == dim
        assert B.shape == C.shape == (batch, A.shape[1], length)
        assert D.dtype == delta_bias.dtype == A.dtype == torch.float32
        calls.append("scan")
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = selective_scan_fn
    conv = types.ModuleType("causal_conv1d")
    conv.causal_conv1d_fn = causal_conv1d_fn
    for name, module in {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
                         "mamba_ssm.ops.selective_scan_interface": interface, "causal_conv1d": conv}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(scan_ops, "_KERNEL", {})
    monkeypatch.setattr(scan_ops, "_CONV_KERNEL", {})
    monkeypatch.setattr(scan_ops, "on_cuda", lambda t: True)
    return calls


@pytest.mark.parametrize("use_kernels", ["auto", "always"])
def test_on_cuda_the_conv_and_the_scan_go_to_the_kernels_in_their_layout(monkeypatch, use_kernels):
    """With the 'kernels' extra on CUDA a whole sequence goes through causal-conv1d's conv + SiLU and mamba-ssm's
    scan, called as their interfaces document (checked here by stand-ins), with the PyTorch path's result and
    gradients; a streamed chunk continues a state, which the scan kernel cannot take, so it stays on PyTorch's."""
    calls = _fake_kernels(monkeypatch)
    kernels, torch_path = _mixer(3, use_kernels=use_kernels), _mixer(3, use_kernels="never")
    x = torch.randn(2, 23, 16)
    y = kernels(x)
    assert calls == ["conv", "scan"]
    torch.testing.assert_close(y, torch_path(x), rtol=1e-5, atol=1e-6)
    y.pow(2).sum().backward()
    torch_path(x).pow(2).sum().backward()
    for (name, a), b in zip(kernels.named_parameters(), torch_path.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    calls.clear()
    with torch.no_grad():
        cache = kernels.allocate_cache(2)
        torch.testing.assert_close(kernels.step(x[:, :9], cache), torch_path(x)[:, :9], rtol=1e-5, atol=1e-6)
    assert "scan" not in calls


def test_a_channels_last_conv_input_the_kernel_would_refuse_stays_on_pytorch(monkeypatch):
    """causal-conv1d takes a channels-last input only with the channels and its other strides in multiples of 8,
    and fails otherwise instead of falling back: such a mixer (d_inner 12) keeps PyTorch's conv on CUDA, and one of
    d_inner 16 uses the kernel."""
    from jambatalk.ops.selective_scan import conv_kernel_for

    _fake_kernels(monkeypatch)
    for d_inner, expected in ((12, False), (16, True)):
        xz = torch.randn(2, 9, 2 * d_inner).transpose(1, 2)  # as a mixer's in_proj output, viewed (B, 2 d_inner, L)
        x_in = xz.chunk(2, dim=1)[0]
        assert (conv_kernel_for(x_in, 4, "auto") is not None) == expected, d_inner
    assert conv_kernel_for(torch.randn(2, 12, 9), 4, "auto") is not None  # contiguous (B, C, L): any width


def test_on_cuda_a_long_prediction_runs_its_scans_in_the_kernel(monkeypatch):
    """predict() ran the Mamba layers of a sequence longer than decode_chunk in chunks carrying a state, which
    mamba-ssm's kernel cannot continue: on CUDA they all fell back on the PyTorch scan. With the kernel there the
    whole sequence goes through it in one pass, with the chunked path's result."""
    import numpy as np

    from jambatalk.config import model_preset
    from jambatalk.model import JambaTalk

    cfg = model_preset("tiny")
    cfg.decoder.use_kernels = "always"  # (auto would take the compiled CPU path on these CPU tensors)
    torch.manual_seed(0)
    model = JambaTalk(cfg, template=np.zeros((cfg.n_vertices, 3), np.float32)).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    model.decode_chunk = 16
    audio = np.random.default_rng(0).normal(size=16000 * 2).astype(np.float32) * 0.1
    calls = _fake_kernels(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(model, "_scan_kernel_runs", lambda x: False)  # as before: 60 frames in chunks of 16
        chunked = model.predict(audio)
    assert "scan" not in calls  # a chunk continuing a state stays on the PyTorch scan
    whole = model.predict(audio)
    assert calls.count("scan") == sum(1 for name in cfg.decoder.schedule if "mamba" in name)
    np.testing.assert_allclose(whole, chunked, rtol=1e-4, atol=1e-5)


def test_a_scan_whose_last_state_needs_a_gradient_stays_off_the_kernel(monkeypatch):
    """mamba-ssm's backward takes no gradient of the last state: on an H100, a loss that used the last state
    gave a gradient of u 22% off the PyTorch scan's through the kernel. With gradients recorded and
    return_last_state, "auto" runs the PyTorch scan and "always" refuses, naming the way out; without either,
    the kernel runs."""
    from jambatalk.ops.selective_scan import selective_scan

    calls = _fake_kernels(monkeypatch)
    x = scan_inputs(1, 4, 3, 9)
    del x["initial_state"]  # (a continued state stays on PyTorch whatever the rest)
    x["u"].requires_grad_()
    y, last = selective_scan(**x, delta_softplus=True, return_last_state=True)
    assert calls == [] and last.requires_grad
    with pytest.raises(InputError, match="no gradient through the last state.*use_kernels='auto'"):
        selective_scan(**x, delta_softplus=True, return_last_state=True, use_kernels="always")
    selective_scan(**x, delta_softplus=True)  # the output alone: its gradient is the kernel's own
    with torch.no_grad():
        selective_scan(**x, delta_softplus=True, return_last_state=True, use_kernels="always")
    assert calls == ["scan", "scan"]


@pytest.mark.parametrize("failure", ["ModuleNotFoundError(\"No module named 'tilelang'\", name='tilelang')",
                                     "ImportError('selective_scan_cuda.so: undefined symbol: _ZN3c10')"])
def test_a_kernel_package_that_is_installed_but_fails_to_import_is_named_once(monkeypatch, tmp_path, failure):
    """mamba-ssm and causal-conv1d that were installed but failed to import (a module they need missing, a CUDA
    build for another torch) left CUDA on the PyTorch paths without a word, several times slower."""
    import importlib
    import sys
    import warnings

    scan_ops = importlib.import_module("jambatalk.ops.selective_scan")

    def packages(raise_in_init: str) -> None:
        for package in ("mamba_ssm", "causal_conv1d"):
            (tmp_path / package).mkdir(exist_ok=True)
            (tmp_path / package / "__init__.py").write_text(f"raise {raise_in_init.format(package=package)}\n")
            monkeypatch.delitem(sys.modules, package, raising=False)
        monkeypatch.setattr(scan_ops, "_KERNEL", {})
        monkeypatch.setattr(scan_ops, "_CONV_KERNEL", {})

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(scan_ops, "on_cuda", lambda t: True)  # as on a GPU
    packages(failure)
    mixer, x = _mixer(3, use_kernels="auto"), torch.randn(1, 9, 16)
    with pytest.warns(UserWarning) as seen:
        mixer(x)
    text = [str(w.message) for w in seen]
    assert len(text) == 2, text
    assert any(t.startswith("mamba_ssm is installed but could not be imported") and "PyTorch scan runs" in t
               and "--force-reinstall --no-build-isolation mamba-ssm" in t for t in text), text
    assert any(t.startswith("causal_conv1d is installed but could not be imported") for t in text), text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixer(x)  # once per process
        packages("ModuleNotFoundError(\"No module named '{package}'\", name='{package}')")  # as if not installed
        mixer(x)  # nothing to say
