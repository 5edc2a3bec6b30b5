"""The JambaTalk model: schedule, streaming equivalence, learning, save / load."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from jambatalk.config import DecoderConfig, ModelConfig, default_schedule, model_preset, to_dict
from jambatalk.errors import CheckpointError, ConfigError
from jambatalk.model import JambaTalk
from jambatalk.model.decoder import JambaDecoder


def _tiny(**decoder):
    cfg = model_preset("tiny")
    for k, v in decoder.items():
        setattr(cfg.decoder, k, v)
    cfg.decoder.__post_init__()
    return cfg


def test_paper_schedules():
    assert default_schedule(1) == ["mamba", "moe_mamba", "attention", "moe_mamba", "mamba", "moe_mamba"]
    assert model_preset("biwi").decoder.schedule == [
        "mamba", "moe_mamba", "mamba", "moe_mamba", "attention", "moe_mamba", "mamba", "moe_mamba", "mamba", "moe_mamba"]
    assert model_preset("vocaset").decoder.d_model == 512 and model_preset("biwi").decoder.d_model == 1024


def test_decoder_builds_a_fresh_module_per_position():
    dec = JambaDecoder(_tiny().decoder)
    kinds = [layer.kind for layer in dec.layers]
    assert kinds == default_schedule(1)
    mixers = [id(layer.mixer) for layer in dec.layers]
    assert len(set(mixers)) == len(mixers)
    ffn_types = [type(layer.ffn).__name__ for layer in dec.layers]
    assert ffn_types == ["MLP", "MoE", "MLP", "MoE", "MLP", "MoE"]


def test_schedule_is_validated():
    with pytest.raises(ConfigError, match="unknown layer kinds"):
        DecoderConfig(schedule=["mamba", "transformer"])
    with pytest.raises(ConfigError, match="n_kv_heads"):
        DecoderConfig(n_heads=8, n_kv_heads=3)


def test_a_new_n_l_over_a_preset_lays_the_layers_out_again():
    """A preset's schedule follows its n_l: an override of n_l alone builds that many layers (it used to keep the
    preset's and record the new n_l beside them), and an explicit schedule still wins."""
    from jambatalk.config import load_experiment

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert load_experiment(configs / "biwi.yaml", ["model.decoder.n_l=1"]).model.decoder.schedule == default_schedule(1)
    assert load_experiment(configs / "biwi.yaml").model.decoder.schedule == default_schedule(2)
    assert load_experiment(configs / "debug.yaml", ["model.decoder.n_l=2"]).model.decoder.schedule == default_schedule(2)
    assert load_experiment(configs / "debug.yaml", ["model.decoder.n_l=2", "model.decoder.schedule=[mamba]"]
                           ).model.decoder.schedule == ["mamba"]
    with pytest.raises(ConfigError, match="n_l is -1"):
        load_experiment(configs / "debug.yaml", ["model.decoder.n_l=-1"])


@pytest.mark.parametrize("span,window,lookahead", [("causal", 0, 0), ("window", 6, 0), ("window", 5, 3)])
def test_decoder_step_equals_forward(span, window, lookahead):
    torch.manual_seed(0)
    dec = JambaDecoder(_tiny(attention_span=span, window=window, lookahead=lookahead).decoder).eval()
    x = torch.randn(2, 37, dec.cfg.d_model)
    full, _ = dec(x)
    cache = dec.allocate_cache(2)
    outs, t = [], 0
    for size in (1, 5, 3, 9, 2, 17):
        outs.append(dec.step(x[:, t: t + size], cache))
        t += size
    outs.append(dec.flush(cache, x))
    stepped = torch.cat(outs, dim=1)
    assert stepped.shape == full.shape
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)


def test_head_starts_at_zero_so_output_is_the_template():
    cfg = _tiny()
    tpl = np.random.default_rng(0).normal(size=(cfg.n_vertices, 3)).astype(np.float32)
    model = JambaTalk(cfg, template=tpl).eval()
    out = model.predict(np.random.default_rng(1).normal(size=8000).astype(np.float32) * 0.1)
    assert out.shape == (12, cfg.n_vertices, 3)  # 0.5 s at 25 fps
    np.testing.assert_allclose(out, np.broadcast_to(tpl, out.shape), atol=1e-6)


def test_predict_is_the_template_plus_the_heads_offsets_in_every_output_block():
    """predict() writes the head's product straight into its output, the template folded into the bias, in
    blocks of frames: it equals template + forward()'s offsets, with and without the silence gains."""
    cfg = _tiny()
    cfg.n_vertices = 30000  # a block of the head's output is then 186 frames: 8 s at 25 fps take two
    tpl = np.random.default_rng(0).normal(size=(cfg.n_vertices, 3)).astype(np.float32)
    torch.manual_seed(0)
    model = JambaTalk(cfg, template=tpl).eval()
    torch.nn.init.normal_(model.head.weight, std=0.01)
    torch.nn.init.normal_(model.head.bias, std=0.01)
    audio = np.random.default_rng(1).normal(size=8 * 16000).astype(np.float32) * 0.1
    with torch.no_grad():
        x = model._predict_input(audio, None, 20.0, 2.0, None)
        offsets = model.head(model.decoder(x)[0])[0].view(-1, cfg.n_vertices, 3).numpy()
    out = model.predict(audio, silence_gate=False)
    assert out.shape == offsets.shape == (200, cfg.n_vertices, 3)
    np.testing.assert_allclose(out, tpl + offsets, rtol=1e-5, atol=1e-5)
    gains = np.linspace(0.0, 1.0, 200, dtype=np.float32)
    with torch.no_grad():
        gated = model._predict_output(x, model.template, 20.0, gains)
    np.testing.assert_allclose(gated, tpl + gains[:, None, None] * offsets, rtol=1e-5, atol=1e-5)


def test_tiny_model_overfits_one_sequence_with_lip_reader_and_all_params_get_gradients():
    from jambatalk.config import LossConfig
    from jambatalk.losses import compute_losses

    torch.manual_seed(0)
    cfg = _tiny()
    T, V = 20, cfg.n_vertices
    model = JambaTalk(cfg, template=np.zeros((V, 3), np.float32)).train()
    t = torch.linspace(0, 1, T)[:, None, None]
    motion = 0.01 * torch.sin(2 * np.pi * 2 * t + torch.linspace(0, 3, V)[None, :, None]).expand(T, V, 3)
    audio = torch.randn(1, int(T / cfg.fps * 16000)) * 0.1
    batch = {"vertices": motion[None].contiguous(), "audio": audio, "frame_mask": None,
             "phonemes": [[["a", 0.0, 0.2], ["b", 0.2, 0.5], ["c", 0.5, 0.8]]]}
    loss_cfg = LossConfig(lip_targets="phonemes")
    steps = 250
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    first = None
    reached = set()  # the zero-initialised head (and LRL-RoPE's zero W2) pass gradients on from step 2
    for step in range(steps):
        out = model(audio, n_frames=T)
        losses = compute_losses(out, batch, loss_cfg, cfg)
        opt.zero_grad()
        losses["total"].backward()
        if step < 3:
            reached |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if step == 0:
            first = float(losses["vertex"].detach())
            assert "lip_ctc" in losses and "lip_latent" in losses
        if step == 2:
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            assert not trainable - reached, f"parameters without gradient: {sorted(trainable - reached)[:8]}"
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    assert float(losses["vertex"].detach()) < first / 100


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny()
    model = JambaTalk(cfg, template=np.ones((cfg.n_vertices, 3), np.float32), faces=np.array([[0, 1, 2]])).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.01)
    audio = np.random.default_rng(0).normal(size=6000).astype(np.float32)
    before = model.predict(audio)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == to_dict(cfg)
    loaded = JambaTalk.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(audio), before)
    assert loaded.faces.tolist() == [[0, 1, 2]]


def test_checkpoint_for_another_mesh_is_refused(tmp_path):
    JambaTalk(_tiny()).save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="64 vertices, not 5023"):
        JambaTalk.from_pretrained(tmp_path / "m", n_vertices=5023)


@pytest.mark.parametrize("damage", ["no_config", "bad_json", "not_ours", "no_weights", "bad_weights"])
def test_damaged_checkpoints_are_refused(tmp_path, damage):
    folder = tmp_path / "m"
    JambaTalk(_tiny()).save_pretrained(folder)
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "bad_json":
        (folder / "config.json").write_text("{oops")
    elif damage == "not_ours":
        (folder / "config.json").write_text(json.dumps({"architectures": ["Wav2Vec2Model"]}))
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    else:
        (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        JambaTalk.from_pretrained(folder)


def test_lip_reader_needs_lip_indices():
    cfg = _tiny()
    cfg.lip_indices = []
    with pytest.raises(ConfigError, match="lip_indices is empty"):
        JambaTalk(cfg)


def test_style_embedding_changes_output_per_subject():
    cfg = _tiny()
    cfg.n_subjects = 3
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    audio = torch.randn(1, 8000)
    a = model(audio, subject_index=torch.tensor([0])).vertices
    b = model(audio, subject_index=torch.tensor([1])).vertices
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("norm", ["layer", "group"])
@pytest.mark.parametrize("time_major", [True, False])
def test_batch_with_padding_matches_single_items(norm, time_major):
    torch.manual_seed(0)
    cfg = _tiny()
    cfg.audio.feat_extract_norm = norm  # a group norm (wav2vec2-base's) takes each item's own samples only
    model = JambaTalk(cfg).eval()
    model.audio_encoder.wav2vec.feature_extractor.time_major = time_major  # False: transformers' layers
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    a1, a2 = torch.randn(16000), torch.randn(9600)
    single = [model(a[None], n_frames=int(len(a) / 16000 * 25)).vertices[0] for a in (a1, a2)]
    audio = torch.zeros(2, 16000)
    audio[0], audio[1, :9600] = a1, a2
    out = model(audio, n_frames=25, audio_lengths=torch.tensor([16000, 9600]), frame_lengths=torch.tensor([25, 15]))
    torch.testing.assert_close(out.vertices[0], single[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.vertices[1, :15], single[1], rtol=1e-3, atol=1e-4)


def test_model_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="lip_indices reach"):
        ModelConfig(n_vertices=10, lip_indices=[3, 12])
    with pytest.raises(ConfigError, match="n_l is -1"):
        DecoderConfig(n_l=-1)


@pytest.mark.parametrize("override,match", [
    ("model.decoder.n_heads=0", "decoder.n_heads is 0"),
    ("model.audio.num_attention_heads=0", "audio.num_attention_heads is 0"),
    ("model.lip_reader.n_heads=0", "lip_reader.n_heads is 0"),
    ("model.audio.conv_stride=[0,8,8]", "conv_stride must be >= 1"),
    ("model.audio.num_hidden_layers=-1", "num_hidden_layers is -1"),
    ("model.decoder.dt_rank=0", "dt_rank is 0"),
    ("model.decoder.mlp_ratio=0", "mlp_ratio is 0"),
    ("model.decoder.rope_rank=0", "rope_rank is 0"),
    ("model.fps=.inf", "fps is inf"),
    ("train.log_every=0", "log_every is 0"),
    ("train.seed=-1", "seed is -1"),
    ("train.betas=[0.9]", "betas is"),
    ("train.warmup_steps=-5", "warmup_steps is -5"),
    # list entries are checked one by one, naming the entry
    ("model.audio.conv_dim=[64,a,64]", "'model.audio.conv_dim[1]' should be a number, got 'a'"),
    ("model.audio.conv_kernel=[10,3.5,3]", "'model.audio.conv_kernel[1]' should be a whole number"),
    ("model.decoder.schedule=[mamba,7]", "'model.decoder.schedule[1]' should be text, got 7"),
    ("train.betas=[0.9,x]", "'train.betas[1]' should be a number"),
    ("model=3", "'model' is 3, not a section of key: value pairs"),  # over a preset: was an AttributeError
])
def test_experiment_overrides_out_of_range_are_config_errors(override, match):
    """Values that used to pass and then fail deep inside (division by zero, an IndexError mid-run) or run
    silently wrong are refused when the experiment is read, naming the key."""
    from jambatalk.config import load_experiment

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_experiment(root / "configs" / "debug.yaml", [override])


@pytest.mark.parametrize("case,match", [
    ("not_utf8", "not UTF-8 text"),
    ("syntax", "not valid YAML at line 3"),
    ("mixed_keys", "unknown config key(s)"),
    ("preset_list", "unknown model preset"),
])
def test_config_files_that_cannot_be_read_are_config_errors(case, match, tmp_path):
    from jambatalk.config import load_experiment

    path = tmp_path / "c.yaml"
    if case == "not_utf8":
        path.write_bytes("model:\n  fps: 30 # caf\xe9\n".encode("latin-1"))
    elif case == "syntax":
        path.write_text("model:\n  fps: [30\ntrain: {}\n")
    elif case == "mixed_keys":
        path.write_text("train:\n  1: a\n  lr: 0.1\n")
    else:
        path.write_text("preset: [a]\n")
    with pytest.raises(ConfigError, match=re.escape(match)) as info:
        load_experiment(path)
    assert "\n" not in str(info.value)


def test_model_folder_with_a_format_version_that_is_not_a_number_is_a_checkpoint_error(tmp_path):
    model = JambaTalk(model_preset("tiny"))
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["format_version"] = "1"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version '1'"):
        JambaTalk.from_pretrained(tmp_path / "m")


def test_a_file_given_as_the_model_folder_is_named_as_a_file(tmp_path):
    (tmp_path / "speech.wav").write_bytes(b"RIFF")
    with pytest.raises(CheckpointError, match="is a file, not a model folder"):
        JambaTalk.from_pretrained(tmp_path / "speech.wav")


def test_format_1_models_with_top_1_experts_are_refused_and_others_still_load(tmp_path):
    """Format 2 changed top-1 routing (the chosen expert is scaled by its probability); a format-1 model that
    used it would animate differently, so it is refused naming the fix. Format-1 models without top-1
    routing (the built-in model's top-2) load as before, and the format 2 saves load."""
    top1 = JambaTalk(model_preset("tiny"))
    assert top1.cfg.decoder.moe.top_k == 1 < top1.cfg.decoder.moe.n_experts
    top2_cfg = model_preset("tiny")
    top2_cfg.decoder.moe.top_k = 2
    for name, model in (("top1", top1), ("top2", JambaTalk(top2_cfg))):
        model.save_pretrained(tmp_path / name)
        assert json.loads((tmp_path / name / "config.json").read_text())["format_version"] == 2
        JambaTalk.from_pretrained(tmp_path / name)
        meta = json.loads((tmp_path / name / "config.json").read_text())
        meta["format_version"] = 1
        (tmp_path / name / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"\(format 1\) was trained with top-1 experts used unscaled") as info:
        JambaTalk.from_pretrained(tmp_path / "top1")
    assert "train.init_from=" in str(info.value)
    loaded = JambaTalk.from_pretrained(tmp_path / "top2")
    assert loaded.cfg.decoder.moe.top_k == 2


def test_kept_derived_is_made_again_exactly_when_a_parameter_changes():
    from jambatalk.model.blocks import kept_derived

    outer = torch.nn.Module()
    outer.scale = torch.nn.Parameter(torch.tensor(2.0))
    outer.inner = torch.nn.Linear(3, 3, bias=False)
    made = []

    def derived():
        return kept_derived(outer, "_kept", ("scale", "inner.weight", "inner.bias"),
                            lambda scale, weight, bias: made.append(bias) or scale * weight)

    with torch.no_grad():
        first = derived()
        assert derived() is first and made == [None]  # kept; the absent bias passed as None
        outer.inner.weight.add_(1.0)  # in place
        assert torch.equal(derived(), outer.scale * outer.inner.weight) and len(made) == 2
        outer.inner = torch.nn.Linear(3, 3, bias=False)  # the submodule replaced
        assert torch.equal(derived(), outer.scale * outer.inner.weight) and len(made) == 3
        outer.scale = torch.nn.Parameter(torch.tensor(-1.0))  # the parameter replaced
        assert torch.equal(derived(), -outer.inner.weight) and len(made) == 4
        derived()
        assert len(made) == 4
    derived(), derived()  # gradients wanted: made on every call
    assert len(made) == 6
    with torch.no_grad(), pytest.raises(ValueError, match="direct submodules"):
        kept_derived(outer, "_other", ("inner.inner.weight",), lambda w: w)


# -- mixed precision: bfloat16 autocast (train.amp on CUDA) runs here on the CPU, whose autocast casts the same
# -- products to bfloat16 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_subjects,top_k,train", [(0, 1, True), (2, 1, False), (2, 2, True), (2, 2, False)])
def test_the_model_trains_and_validates_under_bfloat16_autocast(n_subjects, top_k, train):
    """Under autocast the PyTorch scan's backward got bfloat16 gradients ('expected scalar type BFloat16 but found
    Float'), and a top-1 MoE under a float32 residual (a style embedding) wrote bfloat16 rows into float32 ones;
    a training step and a validation forward now run, with finite gradients and outputs near float32's."""
    cfg = model_preset("tiny")
    cfg.n_subjects, cfg.decoder.moe.top_k, cfg.decoder.moe.n_experts = n_subjects, top_k, 3
    torch.manual_seed(0)
    model = JambaTalk(cfg, template=np.random.default_rng(0).normal(size=(cfg.n_vertices, 3)).astype(np.float32))
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)  # (zero at initialisation)
    model.train(train)
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    kwargs = dict(audio_lengths=torch.tensor([16000, 12000]), frame_lengths=torch.tensor([25, 18]), n_frames=25,
                  lip_reading=train, subject_index=torch.tensor([1, 0]) if n_subjects else None)
    with torch.set_grad_enabled(train):
        torch.manual_seed(2)  # the same dropout masks in both passes: only the precision differs
        ref = model(audio, **kwargs).vertices.float()
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(audio, **kwargs)
    assert torch.isfinite(out.vertices).all()
    a, b = ((v.detach().float() - model.template).flatten() for v in (ref, out.vertices))
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    print(f"correlation of the bfloat16 motion with float32's: {corr:.4f}")
    assert corr > 0.9  # the same motion, to bfloat16's precision
    if train:
        model.zero_grad()
        (out.vertices.float().pow(2).mean() + out.aux_loss).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert model.decoder.layers[0].mixer.A_log.grad is not None  # through the scan


def test_the_compiled_mamba_path_stays_out_of_autocast(monkeypatch):
    """The compiled CPU Mamba path read in_proj's output as float32 whatever its dtype: under CPU autocast it was
    handed bfloat16 rows (heap corruption). It now leaves autocast to the PyTorch path, and refuses other dtypes."""
    from jambatalk.model.mamba import MambaMixer
    from jambatalk.ops import cpu_scan

    if not cpu_scan.available():
        pytest.skip(f"the compiled CPU scan is unavailable here: {cpu_scan.why_unavailable()}")
    calls = []
    inner = cpu_scan._mamba_inner
    monkeypatch.setattr(cpu_scan, "_mamba_inner", lambda lib, xz, *a, **k: calls.append(xz.dtype) or inner(lib, xz, *a, **k))
    torch.manual_seed(0)
    mixer = MambaMixer(DecoderConfig(d_model=64, d_state=16)).eval()
    x = torch.randn(1, 200, 64)
    with torch.no_grad():
        ref = mixer(x)
        assert calls == [torch.float32]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mixer(x)
    assert calls == [torch.float32]  # the autocast call took the PyTorch path
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()
    weights, xz = mixer._kernel_weights().inner, torch.randn(1, 10, 2 * mixer.d_inner)
    with pytest.raises(ValueError, match="takes float32 CPU tensors, got in_proj's output in torch.bfloat16"):
        cpu_scan.mamba_inner_prepared(xz.bfloat16(), weights)
    with pytest.raises(ValueError, match="got x_proj's output in torch.bfloat16"), torch.autocast("cpu", torch.bfloat16):
        cpu_scan.mamba_inner_prepared(xz, weights)
    with pytest.raises(ValueError, match="compiled scan takes float32 CPU tensors, got u in torch.float64"):
        cpu_scan.scan_forward(*(t.double() for t in (torch.randn(1, 4, 6), torch.rand(1, 4, 6), -torch.rand(4, 8),
                                                    torch.randn(1, 8, 6), torch.randn(1, 8, 6))))


def test_predict_names_a_template_of_another_mesh():
    """A template of another vertex count failed deep in the head ("shape '[9138]' is invalid for input of size
    70110"), e.g. tools/eval_default.py on a corpus made on another mesh."""
    from jambatalk.errors import InputError

    cfg = model_preset("tiny")
    model = JambaTalk(cfg, template=np.zeros((cfg.n_vertices, 3), np.float32))
    with pytest.raises(InputError, match=rf"template has {cfg.n_vertices + 7} vertices but the model animates meshes "
                       rf"of {cfg.n_vertices}"):
        model.predict(np.zeros(16000, np.float32), np.zeros((cfg.n_vertices + 7, 3), np.float32))
    assert model.predict(np.zeros(16000, np.float32), torch.ones(cfg.n_vertices, 3)).shape[1:] == (cfg.n_vertices, 3)
