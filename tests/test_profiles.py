"""Accuracy and compute profiles: the rules the simulator relies on, and the tools behind them."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quantpipe_core import evaluate, profile
from quantpipe_core.models import load_model, model_dir, save_folder
from quantpipe_core.models.vit import build_vit
from quantpipe_core.profiles import (
    AccuracyProfile,
    ComputeProfile,
    shipped_accuracy_profile,
    shipped_compute_profile,
)
from quantpipe_core.profiles.accuracy import SCHEMA, monotone
from quantpipe_core.quant import DEFAULT
from quantpipe_core.tasks import task_for


def accuracy_profile(table: dict[str, float], float32: float = 0.97) -> AccuracyProfile:
    return AccuracyProfile({
        "schema": SCHEMA, "model": "m", "metric": "top1", "float32": {"top1": float32},
        "values": {"top1": {"block1.out": {"ds-aciq": table}}},
    })


def test_values_between_measured_bitwidths_are_interpolated():
    p = accuracy_profile({"2": 0.5, "4": 0.9, "8": 0.96})
    assert p.value("block1.out", "ds-aciq", 3) == pytest.approx(0.7)
    assert p.value("block1.out", "ds-aciq", 6) == pytest.approx(0.93)
    assert p.value("block1.out", "ds-aciq", 4) == pytest.approx(0.9)


def test_32_bits_is_float32_and_beyond_the_last_measured_leads_there():
    p = accuracy_profile({"2": 0.5, "8": 0.95})
    assert p.value("block1.out", "ds-aciq", 32) == 0.97
    assert 0.95 < p.value("block1.out", "ds-aciq", 16) < 0.97


def test_unknown_is_none_never_invented():
    p = accuracy_profile({"2": 0.5, "8": 0.95})
    assert p.value("block1.out", "ds-aciq", 1) is None
    assert p.value("block2.out", "ds-aciq", 4) is None
    assert p.value("block1.out", "minmax", 4) is None
    assert p.combined({"block1.out": 4, "block2.out": 4}, "ds-aciq") is None
    assert shipped_accuracy_profile("vit-base") is None


@given(st.lists(st.floats(0, 1), min_size=2, max_size=6))
def test_more_bits_never_predict_less_accuracy(values):
    bits = [2, 3, 4, 6, 8, 16][: len(values)]
    p = accuracy_profile({str(b): v for b, v in zip(bits, values, strict=False)}, float32=1.0)
    predicted = [p.value("block1.out", "ds-aciq", b) for b in range(2, 33)]
    assert all(a <= b + 1e-12 for a, b in pairwise(predicted))


def test_monotone_pools_adjacent_violators():
    np.testing.assert_allclose(monotone(np.array([0.5, 0.9, 0.8, 0.95])), [0.5, 0.85, 0.85, 0.95])


def test_drops_at_several_cuts_add_up():
    p = AccuracyProfile({
        "schema": SCHEMA, "model": "m", "metric": "top1", "float32": {"top1": 0.9},
        "values": {"top1": {"a": {"aciq": {"2": 0.8}}, "b": {"aciq": {"2": 0.6}}}},
    })
    assert p.combined({"a": 2, "b": 2}, "aciq") == pytest.approx(0.9 - 0.1 - 0.3)
    assert p.combined({"a": 2, "b": 32}, "aciq") == pytest.approx(0.8)


def compute_profile() -> ComputeProfile:
    return ComputeProfile({
        "schema": "quantpipe.compute/1", "model": "m",
        "units": {"1": {"1": {"embed": 1.0, "head": 0.5}, "8": {"embed": 4.5, "head": 0.5}}},
        "codec": {"1": {"1": {"out": {"minmax": {"2": {"encode_s": 0.1, "decode_s": 0.05}}}},
                        "8": {"out": {"minmax": {"2": {"encode_s": 0.8, "decode_s": 0.4}}}}}},
    })


def test_compute_times_interpolate_in_microbatch_size_and_scale_with_speed():
    p = compute_profile()
    assert p.unit_s("embed", 8) == 4.5
    assert p.unit_s("embed", 4) == pytest.approx(2.5)
    assert p.stage_s(["embed", "head"], 1) == 1.5
    assert p.encode_s("block3.out", "minmax", 2, 8) == 0.8
    assert p.scaled(2).decode_s("block0.out", "minmax", 2, 8) == 0.2
    with pytest.raises(ValueError, match="threads"):
        p.unit_s("embed", 8, threads=2)
    with pytest.raises(ValueError, match="no codec time"):
        p.encode_s("block0.gelu", "minmax", 2, 8)
    assert p.encode_s("block3.out", "minmax", 5, 8) == 0.8  # the nearest measured bitwidth
    with pytest.raises(ValueError, match="positive"):
        p.scaled(0)


def test_profile_files_are_checked(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not an accuracy profile"):
        AccuracyProfile.from_file(tmp_path / "x.json")
    with pytest.raises(ValueError, match="not a compute profile"):
        ComputeProfile.from_file(tmp_path / "x.json")
    with pytest.raises(ValueError, match="cannot read"):
        AccuracyProfile.from_file(tmp_path / "missing.json")


@pytest.mark.slow
def test_evaluate_writes_a_profile_the_loader_reads(tmp_path, capsys):
    code = evaluate.main([
        "--model", "digits-vit", "--cuts", "block1.gelu,block2.out", "--bits", "1,8",
        "--codecs", "minmax,aciq,ds-aciq", "--samples", "96", "--resamples", "20",
        "--combine", "block1.gelu,block2.out", "--out", str(tmp_path),
    ])
    assert code == 0
    p = AccuracyProfile.from_file(tmp_path / "digits-vit.json")
    assert p.metric == "top1" and p.data["samples"] == 96 and p.data["microbatch"] == 8
    assert set(p.cuts()) == {"block1.gelu", "block2.out"}
    minmax = "minmax/hadamard/auto"  # a label left short takes the default options
    one_bit = p.value("block1.gelu", minmax, 1)
    assert one_bit < p.value("block1.gelu", minmax, 8) <= p.float32() + 0.05
    assert {row["versus"] for row in p.data["differences"]} == {
        "aciq/hadamard/auto", "minmax/hadamard/auto"}
    assert len(p.data["combined"]) == 3  # minmax, aciq, ds-aciq at 1 bit
    assert "DS-ACIQ minus" in (tmp_path / "digits-vit.md").read_text()


@pytest.mark.slow
def test_sentence_fidelity_is_perfect_at_32_bits_and_falls_at_1_bit(tmp_path):
    code = evaluate.main([
        "--model", "minilm", "--cuts", "block2.out", "--bits", "1,16",
        "--codecs", "minmax/none/tensor", "--samples", "64", "--resamples", "20",
        "--out", str(tmp_path),
    ])
    assert code == 0
    p = AccuracyProfile.from_file(tmp_path / "minilm.json")
    assert p.metric == "nn_agreement"
    assert p.float32() == 1.0 and p.float32("cosine") == pytest.approx(1.0)
    plain = "minmax/none/tensor"
    assert p.value("block2.out", plain, 1) < p.value("block2.out", plain, 16)
    assert p.value("block2.out", plain, 16, "cosine") > 0.999


def test_evaluate_takes_a_model_folder_too(tmp_path):
    folder = tmp_path / "my-vit"
    config = json.loads((model_dir("digits-vit") / "config.json").read_text())
    save_folder(load_model("digits-vit"), folder, config)
    code = evaluate.main([
        "--model", str(folder), "--cuts", "block0.out", "--bits", "4", "--codecs", "aciq",
        "--samples", "16", "--resamples", "10", "--out", str(tmp_path / "out"),
    ])
    assert code == 0
    assert AccuracyProfile.from_file(tmp_path / "out" / "my-vit.json").model == "my-vit"


def test_evaluate_refuses_image_models_it_has_no_data_for(tmp_path, capsys):
    config = {**json.loads((model_dir("digits-vit") / "config.json").read_text()),
              "image_size": 16}
    save_folder(build_vit("big", config), tmp_path / "big", config)
    assert evaluate.main(["--model", str(tmp_path / "big"), "--out", str(tmp_path)]) == 2
    assert "8x8 grey digits only" in capsys.readouterr().err


def test_evaluate_refuses_bad_arguments(capsys):
    for argv in (["--bits", "0"], ["--codecs", "magic"], ["--codecs", "ds-aciq/fourier"],
                 ["--bits", "two"]):
        with pytest.raises(SystemExit):
            evaluate.main(argv)
    assert evaluate.main(["--model", "digits-vit", "--cuts", "block7.out"]) == 2
    assert "has no cut 'block7.out'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--samples", "0"], "argument --samples: must be >= 1, got 0"),
    (["--samples", "-5"], "argument --samples: must be >= 1, got -5"),
    (["--microbatch", "0"], "argument --microbatch: must be >= 1, got 0"),
    (["--resamples", "1"], "argument --resamples: must be >= 2, got 1"),
    (["--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
])
def test_evaluate_refuses_meaningless_numbers_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--model", "digits-vit", *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and "\n" not in err


def test_evaluate_refuses_an_out_that_is_a_file_before_measuring(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("it measured"))
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--model", "digits-vit", "--out", str(taken)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert f"argument --out: {taken} exists and is not a folder" in err


def test_evaluate_names_a_broken_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "vit",')
    assert evaluate.main(["--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"evaluate: {tmp_path / 'config.json'}: not valid JSON")
    assert "\n" not in err


def test_profile_writes_unit_and_codec_times(tmp_path):
    code = profile.main([
        "--model", "digits-vit", "--threads", "1", "--microbatch", "1,4", "--bits", "2,32",
        "--codecs", "minmax/none/tensor,ds-aciq", "--repeats", "1", "--out", str(tmp_path),
    ])
    assert code == 0
    p = ComputeProfile.from_file(tmp_path / "digits-vit.json")
    model = load_model("digits-vit")
    assert p.unit_names == model.unit_names
    assert all(p.unit_s(u, 4) > 0 for u in model.unit_names)
    assert p.encode_s("block0.gelu", "minmax/none/tensor", 2, 4) > 0
    assert p.decode_s("embed", "ds-aciq/hadamard/auto", 32, 1) > 0


@pytest.mark.parametrize("model_name", ["digits-vit", "minilm"])
def test_shipped_accuracy_profiles_name_real_cuts(model_name):
    p = shipped_accuracy_profile(model_name)
    assert p is not None and p.model == model_name
    assert set(p.cuts()) <= set(load_model(model_name).cut_ids)
    for cut in p.cuts():
        assert p.value(cut, DEFAULT.label, 16) > p.value(cut, "minmax/none/tensor", 2)


@pytest.mark.parametrize("model_name", ["digits-vit", "minilm"])
def test_shipped_profiles_measure_the_default_codec_and_the_plain_methods(model_name):
    accuracy = shipped_accuracy_profile(model_name)
    compute = shipped_compute_profile(model_name)
    for method in ("minmax", "aciq", "ds-aciq"):
        for label in (f"{method}/none/tensor", f"{method}/hadamard/auto"):
            assert compute.encode_s("block0.out", label, 2, 8) > 0
            measured = label != "minmax/hadamard/auto" or model_name == "digits-vit"
            assert (accuracy.value(accuracy.cuts()[0], label, 2) is not None) == measured


@pytest.mark.parametrize("model_name", ["digits-vit", "minilm", "vit-base"])
def test_shipped_compute_profiles_cover_every_unit_with_one_thread(model_name):
    p = shipped_compute_profile(model_name)
    assert p is not None
    assert p.unit_names == load_model(model_name).unit_names
    assert p.stage_s(p.unit_names, 8, threads=1) > 0


def test_profiles_of_parallel_runs_merge_into_one(tmp_path, capsys):
    common = ["--model", "digits-vit", "--bits", "2", "--codecs", "minmax,ds-aciq",
              "--samples", "32", "--resamples", "10"]
    for cut in ("embed", "block0.out"):
        assert evaluate.main([*common, "--cuts", cut, "--out", str(tmp_path / cut)]) == 0
    parts = [str(tmp_path / cut / "digits-vit.json") for cut in ("embed", "block0.out")]
    assert evaluate.main(["--merge", *parts, "--out", str(tmp_path / "all")]) == 0
    merged = AccuracyProfile.from_file(tmp_path / "all" / "digits-vit.json")
    assert set(merged.cuts()) == {"embed", "block0.out"}
    assert {row["cut"] for row in merged.data["differences"]} == {"embed", "block0.out"}
    assert evaluate.main(["--merge", *parts, parts[0], "--out", str(tmp_path / "twice")]) == 0
    twice = AccuracyProfile.from_file(tmp_path / "twice" / "digits-vit.json")
    assert len(twice.data["differences"]) == len(merged.data["differences"])  # no case twice
    other = evaluate.main([*common[:-4], "--samples", "16", "--resamples", "10", "--cuts",
                           "embed", "--out", str(tmp_path / "small")])
    assert other == 0
    bad = evaluate.main(["--merge", parts[0], str(tmp_path / "small" / "digits-vit.json"),
                         "--out", str(tmp_path / "bad")])
    assert bad == 2 and "cannot merge profiles that differ in" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"schema": "quantpipe.compute/1"}')
    assert evaluate.main(["--merge", parts[0], str(tmp_path / "other.json")]) == 2
    assert "not an accuracy profile" in capsys.readouterr().err


def test_profile_can_keep_earlier_unit_times_and_time_only_the_codec(tmp_path, capsys):
    args = ["--model", "digits-vit", "--threads", "1", "--microbatch", "2", "--bits", "2",
            "--repeats", "1"]
    assert profile.main([*args, "--codecs", "minmax", "--out", str(tmp_path / "a")]) == 0
    earlier = tmp_path / "a" / "digits-vit.json"
    assert profile.main([*args, "--codecs", "aciq", "--units-from", str(earlier),
                         "--out", str(tmp_path / "b")]) == 0
    first = ComputeProfile.from_file(earlier)
    second = ComputeProfile.from_file(tmp_path / "b" / "digits-vit.json")
    assert second.data["units"] == first.data["units"]
    assert second.encode_s("embed", "aciq/hadamard/auto", 2, 2) > 0
    assert profile.main([*args, "--threads", "2", "--units-from", str(earlier),
                         "--out", str(tmp_path / "c")]) == 2
    assert "no unit times for 2 threads" in capsys.readouterr().err


def test_skip_scores_only_the_inputs_after_those_left_out(capsys):
    model = load_model("digits-vit")
    whole = task_for(model, 8, samples=24)
    held_out = task_for(model, 8, samples=8, skip=16)
    assert torch.equal(held_out.labels, whole.labels[16:24])
    assert "after the first 16" in held_out.data
    with pytest.raises(ValueError, match="which leaves 0"):
        task_for(model, 8, skip=10_000)
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--model", "digits-vit", "--skip", "-1"])
    assert refused.value.code == 2 and "--skip" in capsys.readouterr().err
