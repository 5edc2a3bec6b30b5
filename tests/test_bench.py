"""Benchmark plumbing: records, ratios, the stream measurement on a tiny model, bad names."""

import json
import warnings

import numpy as np
import pytest
import torch

from jambatalk.bench import Record, format_table, run_benchmarks
from jambatalk.config import model_preset
from jambatalk.errors import InputError
from jambatalk.model import JambaTalk


def test_record_ratio_and_table():
    r = Record("x/y", 2.0, "s", baseline="b", baseline_value=8.0, params={"n": 1})
    assert r.ratio == 0.25
    table = format_table([r, Record("z", 1.0, "ms")])
    assert "x/y" in table and "0.250" in table and "n=1" in table


def test_unknown_benchmark_is_refused():
    with pytest.raises(InputError, match="unknown benchmark"):
        run_benchmarks(["nope"])


def test_stream_measurement_counts_every_chunk_and_frame():
    from jambatalk.bench.stream import measure

    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.audio.feat_extract_norm = "layer"
    cfg.decoder.attention_span, cfg.decoder.window, cfg.decoder.lookahead = "window", 12, 2
    model = JambaTalk(cfg, template=np.zeros((cfg.n_vertices, 3), np.float32)).eval()
    r = measure(model, seconds=5.0, chunk_ms=100.0, lookahead=0.1)
    assert r["chunks"] == 50 and r["frames"] == 5 * 25
    assert 0 < r["median_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["latency_s"] > 0.4
    assert r["window_s"] == 0.5  # a tenth of a run shorter than ten minutes: its start is compared with its end


def test_stream_trend_windows_are_minutes_or_a_tenth_of_a_short_run():
    """--quick's one minute was one window: its first and last minute were the same, growth could not show."""
    from jambatalk.bench.stream import trend_windows

    growing = np.linspace(1.0, 2.0, 600)  # 60 s of 100 ms chunks
    window, means = trend_windows(growing, 100.0)
    assert window == 6.0 and len(means) == 10 and means[-1] / means[0] > 1.8
    window, means = trend_windows(np.ones(6000), 100.0)  # ten minutes: one-minute windows
    assert window == 60.0 and len(means) == 10
    assert trend_windows(np.ones(5), 100.0) == (0.1, [1.0] * 5)


def test_rtf_times_models_side_by_side_in_one_process():
    from jambatalk.bench.rtf import case, round_ratios

    jt, tr = case("jambatalk,transformer", 0.5, rounds=3)
    assert (jt["model"], tr["model"]) == ("jambatalk", "transformer")
    for r in (jt, tr):
        assert r["frames"] == 15 and r["rounds"] == 3 and not r["extrapolated"]
        assert all(0 < r[k] < 60 for k in ("encoder_s", "decoder_s", "total_s"))
        for part in ("decoder", "total"):  # every round's time kept, the figure the shortest of them
            assert len(r[f"round_{part}_s"]) == 3 and min(r[f"round_{part}_s"]) == r[f"{part}_s"]
    spread = round_ratios(jt, tr, "total")
    assert spread["round_ratio_q1"] <= spread["round_ratio_median"] <= spread["round_ratio_q3"]
    assert 0 < jt["encoder_stock_s"] < 60 and "encoder_stock_s" not in tr  # the encoder with transformers' forward
    with pytest.raises(ValueError, match="on its own"):
        case("jambatalk,faceformer", 0.5, rounds=1)


def test_round_ratios_pair_the_rounds():
    from jambatalk.bench.rtf import round_ratios

    a = {"round_total_s": [2.0, 3.0, 8.0, 4.0, 5.0]}
    b = {"round_total_s": [4.0, 2.0, 4.0, 4.0, 4.0]}  # ratios 0.5, 1.5, 2, 1, 1.25
    assert round_ratios(a, b, "total") == {"round_ratio_median": 1.25, "round_ratio_q1": 1.0, "round_ratio_q3": 1.5}
    assert round_ratios(a, {"round_total_s": [1.0]}, "total") == {}  # not the same rounds
    assert round_ratios(a, {}, "total") == {}  # FaceFormer-style: timed in its own process


def test_scan_bench_times_the_compiled_mixer_against_the_pytorch_one():
    from jambatalk.bench import scan
    from jambatalk.ops import cpu_scan

    if not cpu_scan.available():
        pytest.skip(f"the compiled CPU scan is unavailable here: {cpu_scan.why_unavailable()}")
    rec = scan._mixer_record(d_model=16, length=40, repeats=2, budget_s=0.05)
    assert rec.name == "scan.mixer.compiled" and rec.baseline == "pytorch"
    assert rec.value > 0 and rec.baseline_value > 0 and rec.params["L"] == 40
    rec = scan._moe_record(d_model=16, length=40, repeats=2, budget_s=0.05)  # checks the two agree first
    assert rec.name == "scan.moe.compiled" and rec.baseline == "pytorch"
    assert rec.value > 0 and rec.baseline_value > 0 and rec.params["hidden"] == 32


def test_scan_bench_silences_transformers_advice_to_install_mamba_ssm_while_it_runs(monkeypatch):
    """transformers' scan is a baseline timed on purpose: its 'install mamba_ssm' warning is kept out of the
    table's output while the benchmark runs, and the caller's verbosity comes back after."""
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from jambatalk.bench import scan

    seen = []
    monkeypatch.setattr(scan, "_implementations", lambda: {})
    monkeypatch.setattr(scan, "_compiled", lambda: None)
    monkeypatch.setattr(scan, "_run", lambda impls, quick: seen.append(hf_logging.get_verbosity()) or [])
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        assert scan.run(quick=True) == []
        assert seen == [hf_logging.ERROR] and hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(before)


def test_bench_warns_before_it_runs_on_a_busy_machine(monkeypatch, capsys):
    import os

    import jambatalk.bench as bench
    from jambatalk.cli import main

    monkeypatch.setattr(bench, "run_benchmarks", lambda names, quick=False: [])
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.2, 0.9))
    with pytest.warns(UserWarning, match="the machine's load average is 1.80 on .* CPUs: other work is running"):
        assert main(["bench", "scan"]) == 0
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.5, 0.6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["bench", "scan"]) == 0
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.2, 0.9))  # a wrong name is refused before the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["bench", "nope"]) == 2
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err


def test_bench_json_refuses_a_name_that_is_not_json_before_it_runs(monkeypatch, tmp_path, capsys):
    """--json speech.wav (a mistyped value) overwrote the file with the records."""
    import jambatalk.bench as bench
    from jambatalk.cli import main

    ran = []
    monkeypatch.setattr(bench, "run_benchmarks", lambda names, quick=False: ran.append(names) or [])
    victim = tmp_path / "speech.wav"
    victim.write_bytes(b"RIFF")
    assert main(["bench", "scan", "--json", str(victim)]) == 2
    assert "the output is a .json file" in capsys.readouterr().err
    assert victim.read_bytes() == b"RIFF" and ran == []
    assert main(["bench", "scan", "--json", str(tmp_path / "records.JSON")]) == 0
    assert json.loads((tmp_path / "records.JSON").read_text()) == [] and ran == [["scan"]]


# -- bench gpu: the same code runs on the CPU here (no GPU in the test suite) -------------------------------------
def test_bench_gpu_without_cuda_says_why_and_bench_all_skips_it(monkeypatch, capsys):
    import jambatalk.bench as bench
    from jambatalk.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["bench", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "bench gpu measures on a CUDA GPU, and torch sees none here" in err and "CUDA build of torch" in err
    monkeypatch.setattr(bench, "BENCHMARKS", {"gpu": bench.BENCHMARKS["gpu"]})
    assert run_benchmarks(None, quick=True) == []  # all of them: gpu left out where it cannot run, and said so
    assert "bench: gpu skipped: bench gpu measures on a CUDA GPU" in capsys.readouterr().err


def test_gpu_scan_records_time_the_pytorch_scan_and_say_when_the_kernel_is_not_timed():
    from jambatalk.bench.gpu import scan_records

    records = scan_records(torch.device("cpu"), lengths=(32,), batch=1, d_inner=8, reps=1)
    names = [r.name for r in records]
    assert names == ["gpu/scan/forward/pytorch/L32", "gpu/scan/forward_backward/pytorch/L32"]
    assert all(r.unit == "ms" and r.value > 0 and r.ratio is None for r in records)
    assert "mamba-ssm's kernel not timed" in records[0].params["note"] and records[0].params["device"] == "cpu"


def test_gpu_rtf_and_train_records_compare_jambatalk_with_the_transformer_only_decoder():
    from jambatalk.bench.gpu import preset_config, rtf_records, train_records

    cpu = torch.device("cpu")
    records = {r.name: r for r in rtf_records(cpu, seconds=(1.0,), sizes=("default",), reps=1)}
    jt, tr = records["gpu/rtf/default/jambatalk/1s"], records["gpu/rtf/default/transformer/1s"]
    ratio = records["gpu/rtf/default/jambatalk_vs_transformer/1s"]
    assert jt.unit == "x real time" and jt.value == pytest.approx(jt.params["seconds"], rel=1e-3)
    assert ratio.ratio == pytest.approx(jt.value / tr.value, rel=1e-3)
    train = {r.name: r for r in train_records(cpu, steps=1)}
    assert train["gpu/train/jambatalk_vs_transformer/steps_per_s"].ratio == pytest.approx(
        train["gpu/train/jambatalk/steps_per_s"].value / train["gpu/train/transformer/steps_per_s"].value)
    assert train["gpu/train/jambatalk/steps_per_s"].params["bf16_autocast"] is False  # autocast on CUDA only
    hybrid, twin = preset_config("vocaset", "jambatalk"), preset_config("vocaset", "transformer")
    assert twin.decoder.schedule == ["attention"] * 6 != hybrid.decoder.schedule and twin.decoder.d_model == 512
    assert twin.audio == hybrid.audio and twin.n_vertices == hybrid.n_vertices == 5023


def test_bench_gpu_leaves_out_a_section_that_runs_out_of_memory_and_runs_the_rest(monkeypatch):
    """One out-of-memory error lost every record bench gpu had measured; the section is now left out, said so."""
    import jambatalk.bench.gpu as gpu

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gpu, "device_for_bench", lambda: torch.device("cpu"))
    monkeypatch.setattr(gpu, "rtf_records", oom)
    monkeypatch.setattr(gpu, "train_records", lambda device, steps: [Record("gpu/train/x", 1.0, "steps/s")])
    monkeypatch.setattr(gpu, "scan_records", lambda device, lengths, reps: [Record("gpu/scan/y", 2.0, "ms")])
    with pytest.warns(UserWarning, match="bench gpu: rtf ran out of GPU memory on cpu .*Tried to allocate"):
        records = gpu.run(quick=True)
    assert [r.name for r in records] == ["gpu/train/x", "gpu/scan/y"]
    monkeypatch.setattr(gpu, "rtf_records", lambda *a, **k: 1 / 0)  # other errors still stop it
    with pytest.raises(ZeroDivisionError):
        gpu.run(quick=True)


def test_each_benchmark_is_named_on_stderr_as_it_starts(monkeypatch, capsys):
    """`jambatalk bench` ran for minutes without a word until its table."""
    import jambatalk.bench as bench

    order = []
    monkeypatch.setattr(bench, "_call", lambda target, **kw: order.append(target) or [])
    monkeypatch.setattr(bench, "CONDITIONAL", {})
    run_benchmarks(None, quick=True)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"bench: {name} ({i} of {len(bench.BENCHMARKS)}) ..." for i, name in enumerate(bench.BENCHMARKS, 1)]
    assert len(order) == len(bench.BENCHMARKS) > 1
    run_benchmarks(["scan"])
    assert capsys.readouterr().err == "bench: scan ...\n"
