"""`python -m sim.run` and `sim.simulate`: configs in, the four result files out."""

from __future__ import annotations

import csv
import json
import textwrap

import pytest

from quantpipe_core.config import load_config
from sim import run, simulate

FILES = ("timeline.csv", "windows.csv", "summary.json", "plot.png")


@pytest.fixture
def step_trace(tmp_path):
    path = tmp_path / "step.csv"
    path.write_text("time_s,mbps\n0,60\n60,16\n120,16\n")
    return path


@pytest.fixture
def digits_config(tmp_path):
    path = tmp_path / "digits.toml"
    path.write_text(textwrap.dedent("""
        [model]
        name = "digits-vit"
        cuts = ["block1.out"]
        [policy]
        name = "quantpipe"
        window = 8
        [source]
        target_rate = 2000.0
        [[links]]
        scale = 0.05
    """))
    return path


@pytest.mark.slow
def test_a_bare_trace_runs_the_default_pipeline_and_writes_every_file(tmp_path, step_trace, capsys):
    out = tmp_path / "out"
    assert run.main([str(step_trace), "--out", str(out)]) == 0
    assert all((out / name).is_file() for name in FILES)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("throughput_items_per_s", "target_rate_items_per_s", "target_met_fraction",
                "mean_bits", "expected_accuracy", "measured_accuracy", "latency_p50_s",
                "latency_p95_s", "bits_switches", "items_completed", "links", "run"):
        assert key in summary
    assert summary["expected_accuracy"] is None  # vit-base has no accuracy profile
    assert "no accuracy profile" in summary["notes"][0]
    assert summary["run"]["cuts"] == ["block5.out"]
    assert summary["run"]["traces"]["link0"]["sha256"]
    assert "target met" in capsys.readouterr().out


def test_a_model_with_a_profile_gets_an_expected_accuracy(tmp_path, step_trace, digits_config):
    result = simulate(load_config(digits_config), step_trace)
    assert 0.5 < result.summary["expected_accuracy"] <= 0.98
    assert result.summary["mean_bits"] < 16  # the scaled link forces the policy down


def test_the_same_seed_gives_the_same_files(tmp_path, step_trace):
    for name in ("a", "b"):
        assert run.main([str(step_trace), "--out", str(tmp_path / name), "--seed", "3",
                         "--duration", "60"]) == 0
    for name in ("timeline.csv", "windows.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_fixed_bits_and_policy_options(tmp_path, step_trace):
    out = tmp_path / "fixed"
    assert run.main([str(step_trace), "--policy", "fixed", "--bits", "4", "--out", str(out),
                     "--duration", "30"]) == 0
    assert json.loads((out / "summary.json").read_text())["mean_bits"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bits", "4"], "--bits goes with --policy fixed only"),
        (["--policy", "fixed"], "needs --bits"),
        (["--policy", "greedy"], "policy.name: 'greedy' is not one of"),
        (["--scale", "-1"], "scale"),
    ],
)
def test_bad_options_exit_2_with_a_message(step_trace, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run.main([str(step_trace), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_trace_and_a_bad_config_are_named(tmp_path, step_trace, capsys):
    with pytest.raises(SystemExit):
        run.main([str(tmp_path / "nope.csv")])
    assert "nope.csv" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nmicrobatch = 0\n")
    with pytest.raises(SystemExit):
        run.main([str(step_trace), "--config", str(bad)])
    assert "model.microbatch" in capsys.readouterr().err


@pytest.mark.slow
def test_three_stages_with_a_trace_per_link_and_auto_partition(tmp_path, step_trace):
    fast = tmp_path / "fast.csv"
    fast.write_text("time_s,mbps\n0,500\n60,500\n")
    config = tmp_path / "three.toml"
    config.write_text(textwrap.dedent(f"""
        [model]
        name = "digits-vit"
        partition = "auto"
        [[devices]]
        name = "a"
        [[devices]]
        name = "b"
        [[devices]]
        name = "c"
        [[links]]
        trace = "{fast}"
        [[links]]
        trace = "{step_trace}"
        scale = 0.2
    """))
    result = simulate(load_config(config))
    assert len(result.cuts) == 2
    assert len(result.summary["links"]) == 2
    assert result.summary["items_completed"] > 0


@pytest.mark.slow
def test_compare_ranks_held_out_traces_by_utility_against_the_optimum(tmp_path, step_trace):
    from sim import compare

    flat = tmp_path / "flat.csv"
    flat.write_text("time_s,mbps\n0,30\n60,30\n")
    out = tmp_path / "cmp"
    argv = [str(step_trace), str(flat), "--policies", "fixed:4,quantpipe,optimal",
            "--train", "flat*", "--duration", "40", "--jobs", "2", "--out", str(out)]
    assert compare.main(argv) == 0
    report = (out / "report.md").read_text()
    assert "python -m sim.compare" in report
    assert "perfect forecast of the next window" in report  # what the oracle is
    ranking = report.split("## Ranking (1 held-out trace)")[1].split("### Training traces")[0]
    assert "| rank | policy | utility [95 % CI] | share of optimum |" in ranking
    assert "### Training traces (1 trace)" in report and "## flat.csv (training)" in report
    assert "| policy | utility | share of optimum | gap to optimal |" in report
    assert (out / "scatter.png").is_file() and (out / "step.png").is_file()
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3
    assert {r["trace"] for r in rows if r["training"] == "True"} == {"flat"}
    for row in rows:
        assert float(row["gap_to_optimal"]) <= 1e-9  # nothing beats the optimum's bound
    optimal = [r for r in rows if r["policy"] == "optimal"]
    assert all(float(r["share_of_optimum"]) == pytest.approx(1.0, abs=1e-3) for r in optimal)
    assert (out / "step-fixed4" / "summary.json").is_file()


def test_compare_refuses_bad_policies_before_running(tmp_path, step_trace, capsys):
    from sim import compare

    assert compare.main([str(step_trace), "--policies", "quantpipe,greedy",
                         "--out", str(tmp_path)]) == 2
    assert "greedy" in capsys.readouterr().err


def test_compare_runs_the_per_link_bound_on_several_links_only_when_asked(tmp_path, step_trace):
    from quantpipe_core.config import load_config
    from sim import compare
    from sim.comparison import optimum_feasible

    three = tmp_path / "three.toml"
    three.write_text('[model]\nname = "digits-vit"\n' + "[[devices]]\n" * 3)
    assert not optimum_feasible(load_config(three))  # so not among the default policies
    assert compare.main([str(step_trace), "--config", str(three), "--duration", "10", "--jobs", "1",
                         "--policies", "optimal,fixed:2", "--out", str(tmp_path)]) == 0
    (summary,) = tmp_path.glob("*optimal*/summary.json")
    optimum = json.loads(summary.read_text())["optimal"]
    assert optimum["method"] == "links"
    assert optimum["bound"] >= optimum["plan_value"]


def test_compare_refuses_training_globs_that_match_no_trace(tmp_path, step_trace, capsys):
    from sim import compare

    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(step_trace), "--train", "norway_*", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--train: no trace matches norway_*" in capsys.readouterr().err


def test_the_default_split_leaves_a_block_for_every_later_cut(tmp_path, step_trace):
    from quantpipe_core.plan import resolve

    def devices(n: int) -> str:
        return '[model]\nname = "digits-vit"\n' + "".join(
            f'[[devices]]\nname = "d{i}"\n' for i in range(n)
        )

    five, six = tmp_path / "five.toml", tmp_path / "six.toml"
    five.write_text(devices(5))
    six.write_text(devices(6))
    cuts = resolve(load_config(five), step_trace).cuts
    assert cuts == ["block0.out", "block1.out", "block2.out", "block3.out"]
    with pytest.raises(ValueError, match="4 blocks: too few for 6 stages"):
        resolve(load_config(six), step_trace)


def test_print_default_config_prints_the_documented_defaults_without_a_trace(capsys):
    from quantpipe_core.config import default_toml

    with pytest.raises(SystemExit) as exited:
        run.main(["--print-default-config"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == default_toml()


@pytest.mark.parametrize("policy", ["oracle", "optimal"])
def test_outside_the_simulator_every_sim_only_policy_is_refused_in_one_wording(policy):
    from quantpipe_core.config import SIM_ONLY_POLICIES
    from quantpipe_core.plan import check_real_link_policy, link_policy

    assert policy in SIM_ONLY_POLICIES
    wording = f"the {policy} policy reads the trace's future: it runs in the simulator only"
    with pytest.raises(ValueError, match=wording):
        check_real_link_policy(policy)
    with pytest.raises(ValueError, match=wording):
        link_policy(load_config().replace(**{"policy.name": policy}), None)
    check_real_link_policy("quantpipe")  # a policy that needs no future passes


def test_each_link_sends_with_its_own_codec_or_the_runs(tmp_path, step_trace):
    from quantpipe_core.models.carry import carry_wire_size
    from quantpipe_core.plan import build_specs, resolve

    config = tmp_path / "links.toml"
    config.write_text(textwrap.dedent("""
        [model]
        name = "digits-vit"
        cuts = ["block0.out", "block2.out"]
        [quant]
        clip = "aciq"
        [[devices]]
        name = "a"
        [[devices]]
        name = "b"
        [[devices]]
        name = "c"
        [[links]]
        codec = "minmax/none/tensor"
        [[links]]
    """))
    cfg = load_config(config)
    assert [cfg.link_codec(k) for k in (0, 1)] == ["minmax/none/tensor", "aciq/hadamard/auto"]
    plan = resolve(cfg, step_trace)
    stages, links, _ = build_specs(cfg, plan)
    for link, cut, codec in zip(links, plan.cuts, ("minmax/none/tensor", "aciq/hadamard/auto"),
                                strict=True):
        specs = plan.model.carry_specs(cut, cfg.model.microbatch, cfg.model.tokens)
        assert link.packet_bytes[2] == carry_wire_size(specs, 2, codec)
        assert link.accuracy_by_bits[2] == plan.accuracy.value(cut, codec, 2)
    profile = plan.profiles[1]
    assert stages[1].decode_s[2] == profile.decode_s("block0.out", "minmax/none/tensor", 2, 8)
    assert stages[1].encode_s[2] == profile.encode_s("block2.out", "aciq/hadamard/auto", 2, 8)


def test_a_links_codec_label_is_checked_and_completed(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[links]]\ncodec = "aciq/fft"\n')
    with pytest.raises(ValueError, match=r"links\[0\]\.codec.*unknown transform 'fft'"):
        load_config(path)
    path.write_text('[[links]]\ncodec = "minmax"\n')
    assert load_config(path).links[0].codec == "minmax/hadamard/auto"


def test_each_link_knows_the_path_before_its_sending_stage():
    """``upstream_path_s``: none on the first link; on link k the stages before it (compute and
    codec, as the compute path counts them) and the link latencies between them."""
    from quantpipe_core.plan import build_specs, compute_path, resolve

    cfg = load_config("configs/reports/vit-base-4.toml")
    stages, links, _ = build_specs(cfg, resolve(cfg, "traces/step-drop.csv"))
    paths = [link.upstream_path_s for link in links]
    assert paths[0] == 0.0
    assert paths == [pytest.approx(compute_path(cfg, stages[:k], links[:k])) for k in range(3)]
    assert 0 < paths[1] < paths[2] < links[2].compute_path_s
