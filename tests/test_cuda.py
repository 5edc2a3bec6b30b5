"""The CUDA paths, each against the CPU or the PyTorch path on the same inputs: the PyTorch selective scan,
mamba-ssm's and causal-conv1d's kernels where they are installed (the ``kernels`` extra), a model's inference,
``animate`` and the command line, ``Stream``, and a training run under bfloat16 autocast (``train.amp``).

Every test here skips where torch sees no CUDA device, as on CI. On a GPU machine:
``python -m pytest tests/test_cuda.py -v`` (README: GPU notes). The comparisons run with TF32 off, so that
a difference beyond float32 rounding is a wrong result rather than reduced precision.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from conftest import fake_corpus, scan_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")


def _kernel() -> bool:
    from jambatalk.ops.selective_scan import kernel_available

    return torch.cuda.is_available() and kernel_available()


def _conv() -> bool:
    from jambatalk.ops.selective_scan import conv_kernel

    return torch.cuda.is_available() and conv_kernel() is not None


needs_mamba_ssm = pytest.mark.skipif(not _kernel(),
                                     reason="mamba-ssm is not installed (pip install 'jambatalk[kernels]')")


@pytest.fixture(autouse=True)
def _full_float32():
    """TF32 off for the test (cuDNN's convolutions use it by default), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _rel(x, ref) -> float:
    x, ref = (torch.as_tensor(np.asarray(t) if not torch.is_tensor(t) else t.detach()).double().cpu() for t in (x, ref))
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _scan_inputs(batch: int, d_inner: int, d_state: int, length: int, seed: int = 0) -> dict:
    """conftest's scan inputs without the initial state, which mamba-ssm's kernel does not take."""
    x = scan_inputs(batch, d_inner, d_state, length, seed=seed)
    del x["initial_state"]
    return x


def _scan(fn, inputs: dict, device, grad: bool, state: bool = True, **options):
    """Output, last state (with ``state``) and, when ``grad``, the gradients of a fixed random projection of both,
    on the CPU."""
    leaves = {k: v.to(device).requires_grad_(grad) for k, v in inputs.items()}
    with torch.set_grad_enabled(grad):
        y, last = fn(**leaves, delta_softplus=True, return_last_state=True, **options) if state else (
            fn(**leaves, delta_softplus=True, **options), torch.zeros(()))
        if not grad:
            return y.cpu(), last.cpu(), {}
        g = torch.Generator().manual_seed(1)
        loss = (y * torch.randn(y.shape, generator=g).to(device)).sum()
        if state:
            loss = loss + (last * torch.randn(last.shape, generator=g).to(device)).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return y.cpu(), last.cpu(), {k: v.cpu() for k, v in zip(leaves, grads)}


def _same_scan(got, want, rtol: float) -> None:
    (y, last, grads), (y0, last0, grads0) = got, want
    assert _rel(y, y0) < rtol and _rel(last, last0) < rtol
    assert grads.keys() == grads0.keys()
    for k in grads:
        assert _rel(grads[k], grads0[k]) < rtol, k


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "gradient"])
@pytest.mark.parametrize("length", [7, 300, 2000])
def test_the_pytorch_scan_on_cuda_equals_the_reference_loop(length, grad, monkeypatch):
    from jambatalk.ops.selective_scan import selective_scan, selective_scan_ref

    ops = importlib.import_module("jambatalk.ops.selective_scan")  # (jambatalk.ops.selective_scan is the function)
    monkeypatch.setattr(ops, "SEGMENT_FLOATS", 2 * 8 * 16 * 512)  # inference in segments of 512 steps
    x = _scan_inputs(2, 8, 16, length)
    got = _scan(selective_scan, x, "cuda", grad, use_kernels="never")
    _same_scan(got, _scan(selective_scan_ref, x, "cpu", grad), 2e-4)


@needs_mamba_ssm
@pytest.mark.parametrize("length", [300, 2000])
def test_mamba_ssm_kernel_equals_the_pytorch_scan(length):
    """The kernel's output, last state and gradients equal the PyTorch scan's; its backward takes no gradient of
    the last state, so where one is recorded "auto" gives the PyTorch scan's (complete) gradients."""
    from jambatalk.ops.selective_scan import selective_scan

    x = _scan_inputs(2, 64, 16, length, seed=1)
    pytorch = _scan(selective_scan, x, "cuda", False, use_kernels="never")
    _same_scan(_scan(selective_scan, x, "cuda", False, use_kernels="always"), pytorch, 2e-4)
    pytorch = _scan(selective_scan, x, "cuda", True, state=False, use_kernels="never")
    _same_scan(_scan(selective_scan, x, "cuda", True, state=False, use_kernels="always"), pytorch, 2e-4)
    pytorch = _scan(selective_scan, x, "cuda", True, use_kernels="never")
    _same_scan(_scan(selective_scan, x, "cuda", True, use_kernels="auto"), pytorch, 1e-6)


def _tiny(span: str = "bidirectional", seed: int = 0):
    from jambatalk.config import model_preset
    from jambatalk.model import JambaTalk

    torch.manual_seed(seed)
    cfg = model_preset("tiny")
    cfg.audio.feat_extract_norm = "layer"
    cfg.decoder.attention_span = span
    if span == "window":
        cfg.decoder.window, cfg.decoder.lookahead = 12, 2
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    return model


def _set_kernels(model, value: str):
    """Every layer's ``use_kernels`` (the decoder config's and the copies its layers hold) set to ``value``."""
    model.cfg.decoder.use_kernels = value
    for m in model.modules():
        if type(m).__module__.startswith("jambatalk.") and hasattr(m, "use_kernels"):
            m.use_kernels = value  # (transformers' models have a use_kernels of their own)
    return model


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    loudness = np.repeat(rng.uniform(0, 1, n // 1600 + 1), 1600)[:n]
    return (rng.normal(size=n) * loudness * 0.2).astype(np.float32)


@pytest.mark.parametrize("seconds", [6.0, 45.0], ids=["one window", "windowed"])
def test_a_model_on_cuda_predicts_what_it_predicts_on_the_cpu(seconds):
    model = _tiny()
    audio = _speech(seconds)
    on_cpu = model.predict(audio)
    on_cuda = _set_kernels(model.to("cuda"), "never").predict(audio)
    assert on_cuda.shape == on_cpu.shape and np.isfinite(on_cuda).all()
    assert _rel(on_cuda - model.template.cpu().numpy(), on_cpu - model.template.cpu().numpy()) < 1e-3
    assert float(np.abs(np.diff(on_cpu, axis=0)).max()) > 1e-3  # it moves: equal constants would prove nothing


@pytest.mark.skipif(not (_kernel() or _conv()), reason="neither mamba-ssm nor causal-conv1d is installed")
@pytest.mark.parametrize("seconds", [6.0, 45.0], ids=["one window", "windowed"])
def test_the_kernels_animate_and_train_as_the_pytorch_path_does(seconds):
    model = _tiny().to("cuda")
    audio = _speech(seconds, seed=2)
    with_kernels = _set_kernels(model, "auto").predict(audio)
    without = _set_kernels(model, "never").predict(audio)
    tpl = model.template.cpu().numpy()
    assert _rel(with_kernels - tpl, without - tpl) < 1e-3

    x = torch.as_tensor(audio[None, :32000], device="cuda")
    grads = {}
    for value in ("auto", "never"):
        _set_kernels(model, value).zero_grad()
        model(x, model.template[None], n_frames=50).offsets.square().sum().backward()
        grads[value] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["auto"].keys() == grads["never"].keys() and grads["auto"]
    scale = max(float(g.abs().max()) for g in grads["never"].values())
    for name, g in grads["never"].items():  # (some are rounding noise around 0, as the attention keys' biases')
        assert float((grads["auto"][name] - g).abs().max()) <= 1e-3 * float(g.abs().max()) + 1e-6 * scale, name


def test_animate_and_the_command_line_run_on_cuda(model_dir, tmp_path):
    import soundfile as sf

    from jambatalk.api import animate
    from jambatalk.cli import main

    audio = _speech(4.0, seed=3)
    on_cpu = animate(audio, model=model_dir, sample_rate=16000, device="cpu")
    on_cuda = animate(audio, model=model_dir, sample_rate=16000, device="cuda")
    tpl = on_cpu.template
    assert _rel(on_cuda.vertices - tpl, on_cpu.vertices - tpl) < 1e-3

    wav, out = tmp_path / "a.wav", tmp_path / "a.npy"
    sf.write(wav, audio, 16000, subtype="FLOAT")  # as animate() had it, unquantised
    assert main(["animate", str(wav), "--checkpoint", str(model_dir), "--device", "cuda", "--out", str(out)]) == 0
    assert _rel(np.load(out) - tpl, on_cpu.vertices - tpl) < 1e-3


def test_a_stream_on_cuda_equals_its_offline_pass_and_the_cpu():
    from jambatalk.stream import Stream

    model = _tiny("window", seed=1)
    audio = _speech(5.3, seed=4)
    outputs = {}
    for device in ("cpu", "cuda"):
        stream = Stream(model, lookahead=0.2, block=0.4, context=0.6, norm_seconds=3.0, device=device)
        pieces = [stream.push(audio[i: i + 1700]) for i in range(0, len(audio), 1700)] + [stream.flush()]
        outputs[device] = np.concatenate(pieces), stream.offline(audio)
    streamed, offline = outputs["cuda"]
    tpl = model.template.cpu().numpy()
    assert streamed.shape == offline.shape == outputs["cpu"][0].shape
    assert _rel(streamed - tpl, offline - tpl) < 1e-3
    assert _rel(streamed - tpl, outputs["cpu"][0] - tpl) < 1e-3


def test_training_on_cuda_under_bf16_autocast_learns_and_saves_a_model_for_any_device(tmp_path):
    from pathlib import Path

    from jambatalk.config import load_experiment
    from jambatalk.model import JambaTalk
    from jambatalk.train import Trainer

    root = fake_corpus(tmp_path / "data", frames={n: 60 for n in ("spk01_sent000", "spk02_sent001")})
    cfg = load_experiment(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml",
                          [f"data.root={root}", "data.generate=false", "train.device=cuda", "train.amp=true",
                           "train.max_steps=40", "train.log_every=1", "train.val_every=20", "data.max_seconds=2"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.device.type == "cuda"
    trainer.fit()
    losses = [v for _, v in trainer.history["train/total"]]
    assert len(losses) == 40 and np.isfinite(losses).all()
    vertex = [v for _, v in trainer.history["train/vertex"]]  # the first step's is the untrained head's, near 0
    assert np.mean(vertex[-10:]) < 0.5 * np.mean(vertex[1:11]), vertex

    saved = JambaTalk.from_pretrained(tmp_path / "run" / "last")  # onto the CPU by default
    assert saved.device.type == "cpu"
    audio = _speech(2.0, seed=5)
    on_cpu = saved.predict(audio)
    on_cuda = _set_kernels(saved.to("cuda"), "never").predict(audio)
    tpl = saved.template.cpu().numpy()
    assert np.isfinite(on_cpu).all() and _rel(on_cuda - tpl, on_cpu - tpl) < 1e-3
