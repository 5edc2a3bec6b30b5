"""The compiled CPU scan: equal to the reference, used by selective_scan only where it applies, cached,
and replaced by the PyTorch scan where it cannot be built."""

from __future__ import annotations

import pytest
import torch

from jambatalk.ops import cpu_scan, selective_scan, selective_scan_ref

RTOL = 1e-5


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def _inputs(batch, d_inner, d_state, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": torch.randn(batch, d_inner, length, generator=g),  # softplus makes it a step size
        "A": -torch.rand(d_inner, d_state, generator=g) * 6 - 0.05,
        "B": torch.randn(batch, d_state, length, generator=g),
        "C": torch.randn(batch, d_state, length, generator=g),
        "D": torch.randn(d_inner, generator=g),
        "z": torch.randn(batch, d_inner, length, generator=g),
        "delta_bias": torch.randn(d_inner, generator=g),
    }


@pytest.fixture()
def compiled():
    if not cpu_scan.available():
        pytest.skip(f"the compiled CPU scan is unavailable here: {cpu_scan.why_unavailable()}")


@pytest.fixture()
def fresh(monkeypatch, tmp_path):
    """A loader that has not run yet, building into an empty cache directory."""
    monkeypatch.setattr(cpu_scan, "_STATE", {})
    monkeypatch.setenv("JAMBATALK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 3, 7), (1, 256, 16, 300), (3, 7, 33, 130)],
                         ids=lambda s: "x".join(map(str, s)))
def test_compiled_scan_matches_the_loop_reference(compiled, shape):
    t = _inputs(*shape, seed=sum(shape))
    delta = torch.nn.functional.softplus(t["delta"] + t["delta_bias"][:, None])
    g = torch.Generator().manual_seed(1)
    for h0 in (None, torch.randn(shape[0], shape[1], shape[2], generator=g)):
        y, last = cpu_scan.scan_forward(t["u"], delta, t["A"], t["B"], t["C"], h0)
        y_ref, last_ref = selective_scan_ref(t["u"], delta, t["A"], t["B"], t["C"], initial_state=h0,
                                             return_last_state=True)
        assert y.shape == y_ref.shape and last.shape == last_ref.shape
        assert _rel_err(y, y_ref) <= RTOL and _rel_err(last, last_ref) <= RTOL
    if shape[2] > 1:  # strong decays reach the floor: finite, and still the reference's values
        A = t["A"] * 40
        y, _ = cpu_scan.scan_forward(t["u"], delta, A, t["B"], t["C"])
        assert torch.isfinite(y).all() and _rel_err(y, selective_scan_ref(t["u"], delta, A, t["B"], t["C"])) <= RTOL


def test_selective_scan_uses_it_only_where_it_applies(compiled, monkeypatch):
    calls = []
    real = cpu_scan.scan_forward
    monkeypatch.setattr(cpu_scan, "scan_forward", lambda *a: calls.append(1) or real(*a))
    t = _inputs(2, 6, 16, 90, seed=3)
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    y_ref = selective_scan_ref(*args)
    with torch.no_grad():
        y = selective_scan(*args, use_kernels="auto")
        assert len(calls) == 1 and _rel_err(y, y_ref) <= RTOL
        selective_scan(*args, use_kernels="never")
        assert len(calls) == 1
        # without softplus a negative step size would make exp(delta * A) grow: the PyTorch path takes it
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], use_kernels="auto")
        assert len(calls) == 1
    y_grad = selective_scan(t["u"].requires_grad_(), *args[1:], use_kernels="auto")
    assert len(calls) == 1 and y_grad.requires_grad  # gradients: the chunked scan with its backward


def test_the_library_is_cached_and_leaves_the_float_mode_alone(compiled, fresh):
    torch.set_flush_denormal(False)  # PyTorch's default: subnormal floats are kept
    assert cpu_scan.load() is not None
    built = list(fresh.glob("cpu_scan-*.so"))
    assert len(built) == 1 and not list(fresh.glob("tmp*"))
    stamp = built[0].stat().st_mtime_ns
    cpu_scan._STATE.clear()
    assert cpu_scan.load() is not None
    assert list(fresh.glob("cpu_scan-*.so")) == built and built[0].stat().st_mtime_ns == stamp
    # linked with -ffast-math, loading it would turn on flush-to-zero for the whole process
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0


def test_without_a_compiler_the_pytorch_scan_runs(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not cpu_scan.available() and "compiler" in cpu_scan.why_unavailable()
    assert not fresh.exists()
    with pytest.raises(RuntimeError, match="unavailable"):
        cpu_scan.scan_forward(*(torch.zeros(1, 1, 1),) * 2, -torch.ones(1, 1), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1))
    t = _inputs(1, 4, 4, 20)
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    with torch.no_grad():
        assert _rel_err(selective_scan(*args), selective_scan_ref(*args)) <= 1e-4


def test_a_compile_error_is_reported_and_the_switch_turns_it_off(fresh, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    assert cpu_scan.load() is None and "failed" in cpu_scan.why_unavailable()
    cpu_scan._STATE.clear()
    monkeypatch.setenv("JAMBATALK_CPU_SCAN", "0")
    assert cpu_scan.load() is None and cpu_scan.why_unavailable() == "JAMBATALK_CPU_SCAN=0"


# ----------------------------------------------------------------------------- the whole Mamba mixer


@pytest.mark.parametrize("shape", [(1, 256, 16, 8, 4, 300), (2, 40, 16, 3, 4, 70), (2, 19, 8, 2, 4, 33), (2, 6, 5, 3, 4, 23),
                                   (3, 33, 7, 1, 2, 1), (1, 40, 3, 4, 3, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_mamba_inner_matches_the_pytorch_path(compiled, shape):
    """conv + SiLU, step sizes, scan, skip and gate in the kernels equal conv1d, linear and the PyTorch scan,
    from zeros and from a carried state: d_state 16 and 8 (register blocks of channels, with channels left over
    for any vector width, and more times than one tile), other d_state, d_conv 2..4, one-step chunks."""
    args = cpu_scan.mamba_check_inputs(*shape, seed=sum(shape))
    given = {k: v.clone() for k, v in args.items()}
    for carried in (True, False):
        a = args if carried else {**args, "conv_state": None, "ssm_state": None}
        y, last = cpu_scan.mamba_inner(**a)
        y_ref, last_ref = cpu_scan.mamba_inner_reference(**a)
        assert y.shape == y_ref.shape == (shape[0], shape[5], shape[1]) and last.shape == last_ref.shape
        assert _rel_err(y, y_ref) <= RTOL and _rel_err(last, last_ref) <= RTOL
    assert all(torch.equal(args[k], given[k]) for k in args)  # the inputs, states included, are left alone


def _mixer(seed: int, use_kernels: str = "auto", **overrides):
    from jambatalk.config import DecoderConfig
    from jambatalk.model.mamba import MambaMixer

    torch.manual_seed(seed)
    kw = {"d_model": 24, "d_state": 8, "d_conv": 4, "expand": 2, "schedule": ["mamba"], "use_kernels": use_kernels}
    kw.update(overrides)
    m = MambaMixer(DecoderConfig(**kw))
    with torch.no_grad():  # a trained layer's spread of step sizes and decays, not the initial ones
        m.A_log.add_(torch.randn_like(m.A_log) * 0.5)
        m.dt_proj.bias.add_(torch.randn_like(m.dt_proj.bias))
        m.conv1d.bias.normal_()
    return m


@pytest.mark.parametrize("scale", [1e3, 1e20])
def test_mamba_inner_with_decays_far_below_the_floor_leaves_the_float_mode_alone(compiled, scale):
    """Decays whose exponents lie far below the floor (the vector path takes them unclamped, flushed to 0 for
    the call), down to e^-50000 and beyond -2^22 (where rounding by adding 1.5 * 2^23 no longer gives their
    integer part), give the PyTorch path's results, and the call hands back the caller's float mode:
    subnormals are kept again afterwards."""
    torch.set_flush_denormal(False)
    args = cpu_scan.mamba_check_inputs(batch=1, d_inner=40, d_state=16, dt_rank=2, d_conv=4, length=50, seed=4)
    args["A"] = args["A"] * scale
    y, last = cpu_scan.mamba_inner(**args)
    y_ref, last_ref = cpu_scan.mamba_inner_reference(**args)
    assert torch.isfinite(y).all() and _rel_err(y, y_ref) <= RTOL and _rel_err(last, last_ref) <= RTOL
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0


@pytest.mark.parametrize("d_state", [16, 8])
def test_mamba_inner_gives_the_same_values_on_any_number_of_threads(compiled, d_state, monkeypatch):
    """Long enough to be shared between threads (where the library is built with OpenMP): the conv's rows and
    the scan's blocks of channels are independent, so one thread and three give the same bits, and the
    PyTorch path's values. PyTorch's own product between the two kernels (x_proj) runs on one thread in both:
    its BLAS splits the sums by thread count on some CPUs (AVX-512), which is not the kernels' doing."""
    linear = cpu_scan.F.linear

    def one_thread_linear(*args):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return linear(*args)
        finally:
            torch.set_num_threads(threads)

    monkeypatch.setattr(cpu_scan.F, "linear", one_thread_linear)
    args = cpu_scan.mamba_check_inputs(batch=2, d_inner=72, d_state=d_state, dt_rank=3, d_conv=4, length=700, seed=7)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # first: no buffer then holds the one-thread run's values
        y3, last3 = cpu_scan.mamba_inner(**args)
        torch.set_num_threads(1)
        y1, last1 = cpu_scan.mamba_inner(**args)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(y1, y3) and torch.equal(last1, last3)
    y_ref, last_ref = cpu_scan.mamba_inner_reference(**args)
    assert _rel_err(y3, y_ref) <= RTOL and _rel_err(last3, last_ref) <= RTOL


def test_the_mixer_runs_the_kernels_for_inference_only(compiled, monkeypatch):
    calls = []
    real = cpu_scan.mamba_inner_prepared
    monkeypatch.setattr(cpu_scan, "mamba_inner_prepared", lambda *a, **k: calls.append(1) or real(*a, **k))
    auto, never = _mixer(4), _mixer(4, use_kernels="never")
    x = torch.randn(2, 57, 24)
    with torch.no_grad():
        y, y_ref = auto(x), never(x)
    assert len(calls) == 1 and _rel_err(y, y_ref) <= RTOL
    with torch.inference_mode():
        auto(x)
    assert len(calls) == 2
    y_grad = auto(x)  # training: the PyTorch path and its backward
    assert len(calls) == 2 and y_grad.requires_grad and _rel_err(y_grad.detach(), y_ref) <= RTOL
    with torch.no_grad():
        auto.double()(x.double())  # float64 is not what the kernels take
    assert len(calls) == 2


def test_the_mixer_keeps_its_kernel_weights_until_a_parameter_changes(compiled):
    auto, never = _mixer(6), _mixer(6, use_kernels="never")
    x = torch.randn(1, 33, 24)
    with torch.no_grad():
        auto(x)
        kept = auto._kernel_weights()
        assert auto._kernel_weights() is kept  # nothing changed: not rebuilt
        for p in (auto.A_log, auto.D, auto.dt_proj.bias, auto.conv1d.weight, auto.x_proj.weight, auto.in_proj.weight,
                  auto.out_proj.weight):
            p.add_(0.05 * torch.randn(p.shape))  # written in place, as an optimiser step or load_state_dict
            never.load_state_dict(auto.state_dict())
            assert auto._kernel_weights() is not kept
            kept = auto._kernel_weights()
            assert _rel_err(auto(x), never(x)) <= RTOL
        for owner in (auto.dt_proj, auto.in_proj, auto.out_proj):
            owner.weight = torch.nn.Parameter(owner.weight * 1.5)  # replaced
            never.load_state_dict(auto.state_dict())
            assert _rel_err(auto(x), never(x)) <= RTOL
    with torch.inference_mode():  # a mixer made under inference_mode has no version counters to key on
        made_there = _mixer(6)
        made_there.load_state_dict(auto.state_dict())
        assert _rel_err(made_there(x), never(x)) <= RTOL
    with torch.no_grad():
        auto.out_proj = torch.nn.Linear(auto.d_inner, auto.d_model, bias=True)  # a submodule replaced, now with a bias
        never.out_proj = torch.nn.Linear(auto.d_inner, auto.d_model, bias=True)
        never.load_state_dict(auto.state_dict())
        assert _rel_err(auto(x), never(x)) <= RTOL


@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_compiled_steps_in_chunks_equal_the_pytorch_forward(compiled, d_conv):
    """Streaming through the kernels (chunks shorter and longer than the conv's reach) carries the conv
    inputs and the state exactly: the result is the PyTorch path's one-pass output."""
    auto, never = _mixer(5, d_conv=d_conv), _mixer(5, d_conv=d_conv, use_kernels="never")
    x = torch.randn(2, 40, 24)
    with torch.no_grad():
        full = never(x)
        cache = auto.allocate_cache(2)
        outs, pos = [], 0
        for size in (1, 2, 1, 7, 3, 26):
            outs.append(auto.step(x[:, pos:pos + size], cache))
            pos += size
        assert cache.position == 40 and cache.conv_state.shape == (2, auto.d_inner, d_conv - 1)
        ref_cache = never.allocate_cache(2)
        never.step(x, ref_cache)
    assert _rel_err(torch.cat(outs, dim=1), full) <= RTOL
    assert _rel_err(cache.ssm_state, ref_cache.ssm_state) <= RTOL
    assert torch.equal(cache.conv_state, ref_cache.conv_state)


def test_without_the_library_the_mixer_runs_in_pytorch(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    auto, never = _mixer(6), _mixer(6, use_kernels="never")
    x = torch.randn(1, 30, 24)
    with torch.no_grad():
        assert torch.equal(auto(x), never(x))
    assert not cpu_scan.available()


# ----------------------------------------------------------------------------- the MoE gate


@pytest.mark.parametrize("n_experts,hidden", [(1, 1), (2, 256), (3, 21), (5, 40)])
def test_moe_gate_matches_the_pytorch_gate(compiled, n_experts, hidden):
    """Softmax, GELU and scaling in one pass equal PyTorch's, vector lanes and the rest alike, over GELU's whole
    range (tails where it is 0 or x) and for logits far apart (a weight that underflows)."""
    g = torch.Generator().manual_seed(n_experts)
    rows = torch.randn(45, n_experts * (hidden + 1), generator=g) * 5
    rows[:3, : n_experts * hidden] = torch.linspace(-40.0, 40.0, n_experts * hidden)
    rows[3, n_experts * hidden:] = torch.arange(n_experts) * 200.0
    expected, expected_logits = cpu_scan.moe_gate_reference(rows.clone(), n_experts, hidden)
    out = rows.clone()
    logits = cpu_scan.moe_gate(out, n_experts, hidden)
    assert torch.equal(logits, rows[:, n_experts * hidden:])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-6)
    assert torch.isfinite(out).all()


def test_moe_gate_gives_the_same_values_on_any_number_of_threads(compiled):
    """Rows enough to be shared between threads (where the library is built with OpenMP): each token is
    independent, so one thread and three give the same bits, and the PyTorch gate's values."""
    g = torch.Generator().manual_seed(11)
    rows = torch.randn(301, 2 * (70 + 1), generator=g) * 3
    expected, _ = cpu_scan.moe_gate_reference(rows.clone(), 2, 70)
    outs = []
    previous = torch.get_num_threads()
    try:
        for threads in (3, 1):
            torch.set_num_threads(threads)
            out = rows.clone()
            outs.append((out, cpu_scan.moe_gate(out, 2, 70)))
    finally:
        torch.set_num_threads(previous)
    (three, logits_three), (one, logits_one) = outs
    assert torch.equal(one, three) and torch.equal(logits_one, logits_three)
    assert torch.equal(logits_three, rows[:, 140:])
    torch.testing.assert_close(three, expected, rtol=1e-5, atol=2e-6)


def test_moe_gate_gelu_is_close_to_the_exact_one(compiled):
    x = torch.linspace(-12.0, 12.0, 16 * 2001).reshape(-1, 1)
    rows = torch.cat([x, torch.zeros_like(x)], dim=1)  # one expert of one value: its weight is 1
    cpu_scan.moe_gate(rows, 1, 1)
    exact = x.double() * 0.5 * (1 + torch.erf(x.double() / 2 ** 0.5))
    assert (rows[:, :1].double() - exact).abs().max().item() < 5e-7


def test_moe_gate_refuses_what_it_cannot_read(compiled):
    with pytest.raises(ValueError, match="do not hold 2 experts of 4"):
        cpu_scan.moe_gate(torch.zeros(3, 9), 2, 4)
    with pytest.raises(ValueError, match="contiguous 2-d float32"):
        cpu_scan.moe_gate(torch.zeros(3, 10, dtype=torch.float64), 2, 4)
    with pytest.raises(ValueError, match="contiguous 2-d float32"):
        cpu_scan.moe_gate(torch.zeros(10, 3).t(), 2, 4)


def test_the_moe_runs_the_compiled_gate_for_inference_only(compiled, monkeypatch):
    from jambatalk.config import MoEConfig
    from jambatalk.model.moe import MoE

    calls = []
    real = cpu_scan.moe_gate_prepared
    monkeypatch.setattr(cpu_scan, "moe_gate_prepared", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(5)
    auto = MoE(24, MoEConfig(n_experts=2, top_k=2, hidden_ratio=2)).eval()
    never = MoE(24, MoEConfig(n_experts=2, top_k=2, hidden_ratio=2), use_kernels="never").eval()
    for p in (auto.b1, auto.b2):
        torch.nn.init.normal_(p)
    never.load_state_dict(auto.state_dict())
    x = torch.randn(2, 37, 24) * 3
    with torch.no_grad():
        y, y_ref = auto(x)[0], never(x)[0]
        logits = auto.last_router_logits.clone()
    assert len(calls) == 1 and _rel_err(y, y_ref) <= RTOL
    torch.testing.assert_close(logits, never.last_router_logits)
    y_grad = auto(x)[0]  # gradients wanted: the PyTorch mixture
    assert len(calls) == 1 and y_grad.requires_grad and _rel_err(y_grad.detach(), y_ref) <= RTOL
    with torch.no_grad():
        auto.double()(x.double())
    assert len(calls) == 1


def test_without_the_library_the_moe_gate_runs_in_pytorch(fresh, monkeypatch):
    from jambatalk.config import MoEConfig
    from jambatalk.model.moe import MoE

    monkeypatch.setenv("CC", "/nonexistent/cc")
    torch.manual_seed(6)
    auto = MoE(16, MoEConfig(n_experts=2, top_k=2)).eval()
    never = MoE(16, MoEConfig(n_experts=2, top_k=2), use_kernels="never").eval()
    never.load_state_dict(auto.state_dict())
    x = torch.randn(1, 20, 16)
    with torch.no_grad():
        assert torch.equal(auto(x)[0], never(x)[0])
    assert not cpu_scan.available()
