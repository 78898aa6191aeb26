"""`ltxv bench`: the DiT FLOP model against perf_and_users.md §A.5, the GPU peak table, and tiny-preset runs
(JSON figures, diffusers comparison, flag validation) on the CPU."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from ltxv import bench, bench_diffusers
from ltxv.config import SampleConfig
from ltxv.pipeline import Pipeline
from ltxv.presets import PRESETS

SMALL = ["--preset", "tiny", "--width", "64", "--height", "64", "--frames", "9", "--steps", "2"]
ONCE = ["--repeats", "1", "--warmup", "0"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def tokens(width: int, height: int, frames: int) -> int:
    return (width // 32) * (height // 32) * ((frames - 1) // 8 + 1)


@pytest.mark.parametrize(
    "preset, width, height, frames, tflop",
    [
        ("2b", 704, 480, 81, 15.1),
        ("2b", 768, 512, 121, 29.1),
        ("2b", 768, 512, 161, 41.7),
        ("2b", 800, 448, 121, 25.8),
        ("2b", 1216, 704, 121, 85.5),
        ("2b", 1600, 896, 121, 189.5),
        ("13b", 768, 512, 121, 169.0),
        ("13b", 1216, 704, 121, 444.0),
    ],
)
def test_dit_flops_matches_the_table(preset, width, height, frames, tflop):
    """§A.5: 128 text tokens; 704x480x81 = 3630 tokens, 768x512x121 = 6144, 768x512x161 = 8064."""
    flops = bench.dit_flops(PRESETS[preset].dit, tokens(width, height, frames), 128)
    assert flops / 1e12 == pytest.approx(tflop, rel=0.02)


def test_dit_flops_formula():
    """The docstring's formula term by term on a small config, and linear in neither N nor T alone."""
    cfg = dataclasses.replace(PRESETS["tiny"].dit, num_layers=3)  # d = 16, C = 16, C_txt = 32
    n, t, d = 10, 7, 16
    blocks = 3 * (28 * n * d**2 + 4 * t * d**2 + 4 * n**2 * d + 4 * n * t * d)
    assert bench.dit_flops(cfg, n, t) == blocks + 2 * n * d * (16 + 16) + 2 * t * d * (32 + d)
    text = 3 * 4 * t * d**2 + 2 * t * d * (32 + d)  # every block's k/v + the caption projection
    assert bench.text_flops(cfg, t) == text
    assert bench.dit_flops(cfg, n, t, text_cached=True) == bench.dit_flops(cfg, n, t) - text
    share = 4 * 6144**2 * 2048 * 28 / bench.dit_flops(PRESETS["2b"].dit, 6144, 128)
    assert share == pytest.approx(0.30, abs=0.01)  # §A.5: attention is 30% at 6144 tokens


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Tesla T4", None),
        ("AMD EPYC", None),
    ],
)
def test_peak_table(name, peak):
    assert bench.peak_tflops(name) == peak


def test_tiny_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    assert bench.run(parse(*SMALL, *ONCE, "--stg", "1", "--json", str(path))) == 0
    printed = capsys.readouterr().out
    assert "realtime factor" in printed and "MFU n/a on CPU" in printed
    r = json.loads(path.read_text())
    for key in ("wall_s", "realtime_factor", "peak_mem_gb", "device", "mfu", "stages", "settings", "version"):
        assert key in r, key
    assert r["device"] == "cpu" and r["mfu"] is None and r["version"] == bench_version()
    st = r["stages"]
    assert st["steps"] == 2 and st["text_s"] is None
    assert min(r["wall_s"], st["denoise_s"], st["step_mean_s"], st["step_median_s"], st["decode_s"]) > 0
    assert r["wall_s"] >= st["denoise_s"] + st["decode_s"] - 1e-6
    assert r["realtime_factor"] == pytest.approx((9 / 24) / r["wall_s"])
    assert r["peak_mem_gb"] > 0 and r["peak_mem_kind"] == "process max RSS"
    assert (
        r["settings"]["num_frames"] == 9 and r["settings"]["stg"] == 1.0 and r["settings"]["dtype"] == "fp32"
    )
    assert r["forwards_per_step"] == 3  # CFG 3 + STG 1: [uncond, cond, perturbed]
    assert r["text_tokens"] == 256  # 0.9.5-era preset
    tiny = PRESETS["tiny"].dit  # 2x2x2 latents; the text's keys/values once per generation (text cache)
    expected = 3 * (2 * bench.dit_flops(tiny, 8, 256, text_cached=True) + bench.text_flops(tiny, 256)) / 1e12
    assert r["dit_tflop_total"] == pytest.approx(expected)
    assert r["time_to_first_frame_s"] == pytest.approx(r["wall_s"])  # not streamed: all frames at the end
    assert r["settings"]["speed"] == dataclasses.asdict(bench.SpeedConfig())


def test_bench_counts_the_forwards_of_a_guidance_interval(tmp_path, capsys):
    """--guidance-until 0.99 on the tiny preset's two steps (t = 1, 0.975): [uncond, cond] then [cond]."""
    path = tmp_path / "bench.json"
    assert bench.run(parse(*SMALL, *ONCE, "--stg", "0", "--guidance-until", "0.99", "--json", str(path))) == 0
    assert "guidance 3 at t >= 0.99, STG 0 -> 1.5 DiT forwards/step" in capsys.readouterr().out
    r = json.loads(path.read_text())
    assert (
        r["dit_forwards"] == 3 and r["forwards_per_step"] == 1.5 and r["settings"]["guidance_until"] == 0.99
    )
    tiny = PRESETS["tiny"].dit  # the text's share once per set of branches: 2 rows, then 1
    expected = (3 * bench.dit_flops(tiny, 8, 256, text_cached=True) + 3 * bench.text_flops(tiny, 256)) / 1e12
    assert r["dit_tflop_total"] == pytest.approx(expected)


def bench_version() -> str:
    import ltxv

    return ltxv.__version__


def test_compare_diffusers_on_tiny(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.run(parse(*SMALL, *ONCE, "--compare", "diffusers", "--json", str(path))) == 0
    out = capsys.readouterr()
    assert "diffusers / ltxv time" in out.out and "STG" in out.err  # STG forced off, and said so
    r = json.loads(path.read_text())
    c = r["compare"]
    assert r["settings"]["stg"] == 0.0 and r["forwards_per_step"] == 2
    settings = bench.settings_from_args(parse(*SMALL, "--compare", "diffusers", "--guidance-until", "0.5"))
    assert settings.sample.guidance_until == 0.0 and "no guidance interval" in capsys.readouterr().err
    assert c["ratio"] > 0 and c["step_ratio"] > 0 and c["stages"]["steps"] == 2
    assert c["ratio"] == pytest.approx(c["wall_s"] / c["ltxv_wall_s_without_text"])


def test_diffusers_pipeline_shares_the_weights():
    pipe = Pipeline(
        *bench.random_models(PRESETS["tiny"], torch.device("cpu"), torch.float32), PRESETS["tiny"]
    )
    dpipe = bench_diffusers.diffusers_pipeline(pipe)
    assert dpipe.transformer.proj_in.weight.data_ptr() == pipe.dit.patchify_proj.weight.data_ptr()
    assert dpipe.vae.latents_std.data_ptr() == pipe.vae.latent_std.data_ptr()
    tensors = list(dpipe.transformer.state_dict().values()) + list(dpipe.vae.state_dict().values())
    assert not any(t.is_meta for t in tensors)


def test_compare_reports_an_inexpressible_model(monkeypatch, tmp_path, capsys):
    from ltxv.convert import ConversionError

    spec = PRESETS["tiny"]
    spec = dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, spatial_padding_mode="reflect"))
    pipe = Pipeline(*bench.random_models(spec, torch.device("cpu"), torch.float32), spec)
    with pytest.raises(ConversionError, match="padding"):
        bench_diffusers.diffusers_runner(pipe, SampleConfig(stg=0.0), None, None, "")

    def refuse(_pipe):  # noqa: ANN001, ANN202
        raise ConversionError("decoder compress_time/compress_space blocks have no diffusers equivalent")

    monkeypatch.setattr(bench_diffusers, "diffusers_pipeline", refuse)
    path = tmp_path / "bench.json"
    assert bench.run(parse(*SMALL, *ONCE, "--compare", "diffusers", "--json", str(path))) == 0
    assert "diffusers: skipped, this model cannot be expressed in diffusers" in capsys.readouterr().out
    assert "no diffusers equivalent" in json.loads(path.read_text())["compare"]["error"]


def test_measure_interleaves_runners():
    calls = []

    def runner(name: str):  # noqa: ANN202
        def run_once() -> bench.RunTimes:
            calls.append(name)
            return bench.RunTimes(total=1.0, text=None, steps=[0.5], decode=0.5)

        return run_once

    out = bench.measure({"a": runner("a"), "b": runner("b")}, 2, 1, torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-ups, then rounds of a, b
    assert [len(out[k][0]) for k in "ab"] == [2, 2] and out["a"][1] > 0


def test_random_models_dtype_and_rng():
    state, default = torch.random.get_rng_state(), torch.get_default_dtype()
    vae, dit = bench.random_models(PRESETS["tiny"], torch.device("cpu"), torch.bfloat16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_default_dtype() == default
    assert {p.dtype for p in [*vae.parameters(), *vae.buffers(), *dit.parameters()]} == {torch.bfloat16}
    again = bench.random_models(PRESETS["tiny"], torch.device("cpu"), torch.bfloat16, seed=3)[1]
    assert torch.equal(dit.proj_out.weight, again.proj_out.weight)  # seeded


def test_text_encoder_stage_is_timed(tmp_path):
    """With --model and --text-encoder the text stage is timed (tiny T5: d_model 32 = the tiny DiT's)."""
    from conftest import randomize_
    from tiny_t5 import make_tiny_t5

    import ltxv
    from ltxv.weights import save_checkpoint

    spec = PRESETS["tiny"]
    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, spec, randomize_(ltxv.VideoVAE(spec.vae)), randomize_(ltxv.VideoDiT(spec.dit)))
    t5 = make_tiny_t5(tmp_path / "t5", "flat")
    args = parse(*SMALL[2:], *ONCE, "--model", str(model), "--text-encoder", str(t5), "--json", "")
    r = bench.run_bench(bench.settings_from_args(args))
    assert r["stages"]["text_s"] > 0 and r["settings"]["model"] == str(model)
    assert r["wall_s"] >= r["stages"]["text_s"] + r["stages"]["denoise_s"] + r["stages"]["decode_s"] - 1e-6


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--frames", "0"], "--frames"),
        (["--frames", "-8"], "--frames"),
        (["--steps", "0"], "--steps"),
        (["--repeats", "0"], "--repeats"),
        (["--warmup", "-1"], "--warmup"),
        (["--preset", "nope"], "nope"),
        (["--fps", "nan"], "--fps must be a finite number"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--device", "foo"], "--device"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_flags_raise_value_error(flags, named):
    with pytest.raises(ValueError, match=named):
        bench.run(parse(*SMALL, *flags))


def test_a_bad_json_path_fails_before_the_benchmark(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(bench, "run_bench", lambda s: pytest.fail("the benchmark ran"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        bench.run(parse(*SMALL, "--json", str(tmp_path / "file" / "bench.json")))
    with pytest.raises(ValueError, match="it is a folder"):
        bench.run(parse(*SMALL, "--json", str(tmp_path)))


def test_speed_flags_reach_the_pipeline_and_the_report(tmp_path, capsys):
    """--attention / --fp8 / --no-text-cache / --block-cache / --stream: parsed, applied, reported."""
    path = tmp_path / "bench.json"
    flags = ["--frames", "25", "--attention", "sdpa-math", "--fp8", "--no-text-cache", "--block-cache", "0.1"]
    assert bench.run(parse(*SMALL, *ONCE, *flags, "--stream", "1", "--json", str(path))) == 0
    printed = capsys.readouterr().out
    assert (
        "speed-ups: no text K/V cache, attention sdpa-math, eager, fp8 linears, first-block cache 0.1"
        in printed
    )
    r = json.loads(path.read_text())
    assert r["settings"]["speed"] == dict(
        text_cache=False,
        attention="sdpa-math",
        compile=None,
        fp8=True,
        block_cache=0.1,
        cfg_parallel=1,
        sequence_parallel=1,
    )
    assert r["settings"]["stream_chunk"] == 1 and "streamed in chunks of 1" in printed
    assert 0 < r["time_to_first_frame_s"] < r["wall_s"]  # 4 latent frames in chunks of 1: 4 runs of frames
    tiny = PRESETS["tiny"].dit  # 4x2x2 latents, text recomputed at every forward
    assert r["dit_tflop_total"] == pytest.approx(3 * 2 * bench.dit_flops(tiny, 16, 256) / 1e12)


def test_bench_help_lists_the_speed_flags():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    text = parser.format_help()
    for flag in ("--attention", "--compile", "--fp8", "--no-text-cache", "--block-cache", "--stream"):
        assert flag in text, flag
    assert parse("--compile").compile == "default" and parse("--stream").stream == 4
    with pytest.raises(ValueError, match="--stream"):
        bench.settings_from_args(parse("--stream", "0"))
    with pytest.raises(ValueError, match=">= 0"):
        bench.settings_from_args(parse("--block-cache", "-1"))


def test_unset_flags_take_the_models_generation_settings(tmp_path):
    """As `ltxv generate`: a flag not given comes from the model's generation.json, else the default."""
    from ltxv.demo import DEMO_DIR, generation_defaults

    demo = generation_defaults(DEMO_DIR)
    s = bench.settings_from_args(parse("--preset", "demo"))  # random demo weights, the bundled model's shape
    assert (s.sample.width, s.sample.num_frames, s.sample.steps) == (
        demo["width"],
        demo["num_frames"],
        demo["steps"],
    )
    assert (s.sample.stg, s.sample.max_tokens) == (demo["stg"], demo["max_tokens"])
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "generation.json").write_text(json.dumps({"width": 96, "steps": 7, "guidance": 2.5}))
    s = bench.settings_from_args(parse("--model", str(folder), "--steps", "3"))
    assert (s.sample.width, s.sample.steps, s.sample.guidance) == (96, 3, 2.5)  # the flag wins
    assert s.sample.height == SampleConfig().height  # neither given nor in the file: the default
    s = bench.settings_from_args(parse("--preset", "tiny"))
    assert (s.sample.width, s.sample.steps, s.sample.stg) == (
        SampleConfig().width,
        SampleConfig().steps,
        SampleConfig().stg,
    )
    (folder / "generation.json").write_text(json.dumps({"widht": 96}))
    with pytest.raises(ValueError, match="widht"):
        bench.settings_from_args(parse("--model", str(folder)))
