"""Links that code losslessly (``+zstd``): configs and labels name it, lossless profiles size
the packets and time the coder, the sender's expected sizes follow what it sends, and a policy
turns the coder off for a window where it does not pay."""

from __future__ import annotations

import textwrap

import pytest

from quantpipe_core.config import load_config
from quantpipe_core.models import load_model
from quantpipe_core.models.carry import encode_carry
from quantpipe_core.names import FLOAT_BITS, canonical_codec_label, codec_parts, values_label
from quantpipe_core.plan import LinkSpec, SourceSpec, StageSpec, build_specs, resolve
from quantpipe_core.policy import FixedPolicy, Observation, PlannerPolicy, coding_pays
from quantpipe_core.profiles import LosslessProfile, shipped_lossless_profile
from quantpipe_core.quant import Codec, wire_size
from quantpipe_core.results import RunInfo, summary
from quantpipe_core.sender import PacketSizes, PolicyFailed
from quantpipe_core.tasks import task_for
from quantpipe_core.trace import Trace
from sim.pipeline import Pipeline

DEFAULT_LABEL = "ds-aciq/hadamard/auto"


def config_file(tmp_path, model="minilm", cut="block2.out", quant="", links=""):
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(f"""
        [model]
        name = "{model}"
        cuts = ["{cut}"]
        [quant]
        {quant}
        [[links]]
        {links}
    """))
    return path


def test_a_label_names_its_coder_after_a_plus_and_profiles_are_keyed_without_it():
    assert codec_parts("aciq/none/tensor+zstd") == {
        "method": "aciq", "transform": "none", "granularity": "tensor", "lossless": "zstd"}
    assert canonical_codec_label("aciq+zstd") == "aciq/hadamard/auto+zstd"
    assert Codec.parse("minmax/none/tensor+zstd").label == "minmax/none/tensor+zstd"
    assert Codec.parse("minmax/none/tensor").label == "minmax/none/tensor"
    assert values_label("ds-aciq/hadamard/auto/o3+zstd") == "ds-aciq/hadamard/auto/o3"
    with pytest.raises(ValueError, match="unknown lossless 'lz4'"):
        canonical_codec_label("aciq+lz4")


def test_quant_lossless_and_a_links_label_select_the_coder(tmp_path):
    config = load_config(config_file(tmp_path, quant='lossless = "zstd"'))
    assert config.link_codec(0) == f"{DEFAULT_LABEL}+zstd"
    config = load_config(config_file(tmp_path, links='codec = "minmax/none/tensor+zstd"'))
    assert config.link_codec(0) == "minmax/none/tensor+zstd"
    with pytest.raises(ValueError, match="lossless"):
        load_config(config_file(tmp_path, quant='lossless = "gzip"'))


def profile(ratio=0.8, encode_s=0.004, decode_s=0.002):
    entry = {"ratio": ratio, "ratio_max": ratio, "encode_s": encode_s, "decode_s": decode_s}
    return LosslessProfile({"schema": "quantpipe.lossless/1", "model": "m", "coder": "zstd",
                            "microbatch": 8, "cuts": {"block0.out": {DEFAULT_LABEL: {
                                "2": entry, "8": {**entry, "ratio": 0.9}}}}})


def test_a_lossless_profile_reads_the_nearest_bitwidth_and_scales_its_times():
    coded = f"{DEFAULT_LABEL}+zstd"
    lossless = profile()
    assert lossless.ratio("block0.out", coded, 2) == 0.8
    assert lossless.ratio("block0.out", coded, 4) == 0.8  # 2 is nearer than 8
    assert lossless.ratio("block0.out", coded, 6) == 0.9
    assert lossless.ratio("block0.out", coded, FLOAT_BITS) == 1.0  # float32 is never coded
    assert lossless.encode_s("block0.out", coded, 2, 16) == pytest.approx(0.008)
    assert lossless.scaled(2).decode_s("block0.out", coded, 2, 8) == pytest.approx(0.001)
    assert lossless.encode_s("block0.out", coded, FLOAT_BITS, 8) == 0.0
    with pytest.raises(ValueError, match=r"no cut 'block1\.out'.*lossless_profile --model m"):
        lossless.ratio("block1.out", coded, 2)


@pytest.mark.parametrize("model", ["minilm", "digits-vit"])
def test_shipped_profiles_save_bytes_with_the_default_scheme_at_low_bitwidths(model):
    """Every cut saves bytes at 2-4 bits, none ever costs more than the bit-planes (the codec
    falls back to them), and the coder's time is recorded at every bitwidth."""
    lossless = shipped_lossless_profile(model)
    assert lossless is not None and lossless.data["coder"] == "zstd"
    for cut in load_model(model).cut_ids:
        for bits in (2, 3, 4):
            assert lossless.ratio(cut, f"{DEFAULT_LABEL}+zstd", bits) < 1.0
        for entry in lossless.data["cuts"][cut][DEFAULT_LABEL].values():
            assert entry["ratio"] <= entry["ratio_max"] <= 1.0
            assert entry["encode_s"] >= 0 and entry["decode_s"] >= 0


def test_a_coded_link_sends_fewer_expected_bytes_and_pays_the_coder_on_both_stages(tmp_path):
    plain = load_config(config_file(tmp_path))
    coded = load_config(config_file(tmp_path, quant='lossless = "zstd"'))
    stages_p, (link_p,), _ = build_specs(plain, resolve(plain, "traces/step-drop.csv"))
    stages_c, (link_c,), _ = build_specs(coded, resolve(coded, "traces/step-drop.csv"))
    assert link_c.worst_packet_bytes == link_p.packet_bytes  # the exact bound: bit-planes
    assert link_c.packet_bytes[FLOAT_BITS] == link_p.packet_bytes[FLOAT_BITS]
    for bits in (2, 3, 4, 6, 8):
        assert link_c.packet_bytes[bits] < link_p.packet_bytes[bits]
        assert stages_c[0].encode_s[bits] >= stages_p[0].encode_s[bits]
        assert stages_c[1].decode_s[bits] >= stages_p[1].decode_s[bits]
    assert link_c.accuracy_by_bits == link_p.accuracy_by_bits  # a coder changes no value


@pytest.mark.parametrize("model, cut, quant", [
    ("vit-base", "block5.out", 'lossless = "zstd"'),  # no lossless profile at all
    ("minilm", "block2.out", 'clip = "percentile"\nlossless = "zstd"'),  # codec not measured
])
def test_a_simulation_of_a_coded_link_needs_it_profiled_and_a_real_run_does_not(
        tmp_path, model, cut, quant):
    config = load_config(config_file(tmp_path, model=model, cut=cut, quant=quant))
    with pytest.raises(ValueError, match=f"lossless profile shipped for '{model}' does not "
                                         "measure it.*lossless_profile --model"):
        resolve(config, "traces/step-drop.csv")
    plan = resolve(config, traces_needed=False)
    _, (link,), _ = build_specs(config, plan)
    assert link.packet_bytes == link.worst_packet_bytes  # its sender learns the sizes


def test_with_bit_planes_the_expected_sizes_stay_the_exact_ones():
    exact = {2: 1000, 4: 2000, FLOAT_BITS: 16000}
    sizes = PacketSizes(exact, exact)
    for bits in (2, 4, FLOAT_BITS, 2):
        sizes.sent(bits, exact[bits])
    assert sizes.expected() == exact and sizes.ratio == 1.0


def test_expected_sizes_follow_the_coded_sizes_sent_and_never_pass_the_worst_case():
    prior, worst = {2: 800, 4: 1800, FLOAT_BITS: 16000}, {2: 1000, 4: 2000, FLOAT_BITS: 16000}
    sizes = PacketSizes(prior, worst)
    for _ in range(40):
        sizes.sent(2, 400)  # the data compresses twice as well as the profile said
    assert sizes.expected()[2] == pytest.approx(400, rel=0.01)
    assert sizes.expected()[4] == pytest.approx(900, rel=0.01)  # follows, unsent
    assert sizes.expected()[FLOAT_BITS] == 16000  # float32 is never coded
    for _ in range(40):
        sizes.sent(2, 1000)  # incompressible data: bit-planes, a quarter above the prior
    assert sizes.expected()[2] == 1000
    assert sizes.expected()[4] == 2000  # 1800 x 1.25, capped at the exact bound


@pytest.mark.parametrize("model, cut", [("digits-vit", "block1.gelu"), ("minilm", "block2.out")])
def test_expected_window_bytes_are_within_a_tenth_of_the_sent_on_held_out_data(
        tmp_path, model, cut):
    """The sender's expectation, from the shipped profile and the sizes sent so far, against
    the frames of inputs the profile did not measure (its first 64 are skipped), in windows of
    4 microbatches whose bitwidth changes every window (a policy on a trace switches less).
    Sentences are at the config's length, as the runtime feeds them, so that only the coder's
    bytes vary."""
    config = load_config(config_file(tmp_path, model=model, cut=cut, quant='lossless = "zstd"'))
    _, (link,), _ = build_specs(config, resolve(config, "traces/like-norway-bus.csv"))
    label = config.link_codec(0)
    staged = load_model(model)
    end = staged.cut_index(cut) + 1
    task = task_for(staged, config.model.microbatch, 256, skip=64, tokens=config.model.tokens)
    schedule = [2, 2, 3, 3, 4, 4, 6, 8]  # every bitwidth a policy may pick, in turn
    sizes = PacketSizes(link.packet_bytes, link.worst_packet_bytes)
    errors, window_expected, window_sent = [], 0, 0
    for index, inputs in enumerate(task.microbatches):
        bits = schedule[(index // 4) % len(schedule)]
        sent = len(encode_carry(staged.run(inputs, 0, end), bits, label))
        window_expected += sizes.expected()[bits]
        window_sent += sent
        sizes.sent(bits, sent)
        if index % 4 == 3:
            errors.append(abs(window_expected - window_sent) / window_sent)
            window_expected, window_sent = 0, 0
    assert max(errors[1:]) <= 0.10, errors


class EveryOtherWindowCoded:
    """4 bits always; the coder on in even windows only, as a policy's ``code`` may choose."""

    def decide(self, obs):
        self.window = obs.window_index
        return [4] * obs.window_len

    def code(self, obs, bits):
        return self.window % 2 == 0


def coded_pipeline(policy, mbps=2.0, until=60.0):
    """One coded link of a ViT-Base-sized packet: coded 3/4 of bit-planes; the coder costs
    5 ms to encode on stage 0 and 3 ms to decode on stage 1 (both included in their times)."""
    shape, worst = (8, 197, 768), {b: wire_size((8, 197, 768), b) for b in (2, 4, 32)}
    link = LinkSpec(Trace.from_segments([0.0], [mbps], 1000.0), {**{b: n * 3 // 4
                    for b, n in worst.items()}, 32: worst[32]}, policy, shape,
                    worst_packet_bytes=worst, coded=True, coder_encode_s={2: 0.005, 4: 0.005},
                    coder_decode_s={2: 0.003, 4: 0.003})
    stages = [StageSpec(0.1, encode_s={2: 0.015, 4: 0.015}),
              StageSpec(0.1, decode_s={2: 0.013, 4: 0.013})]
    pipeline = Pipeline(stages, [link], SourceSpec(1000.0, 8, mode="closed", max_in_flight=1),
                        allowed_bits=(2, 4), window=2)
    return pipeline.run(until), link


def test_a_window_the_policy_sends_without_the_coder_takes_the_worst_size_and_no_coder_time():
    records, link = coded_pipeline(EveryOtherWindowCoded())
    windows = {w.window_index: w for w in records.windows}
    assert [windows[i].coded for i in range(4)] == [True, False, True, False]
    for mb, _ in sorted(records.link_bytes)[:8]:
        coded = windows[mb // 2].coded
        assert records.link_bytes[mb, 0] == (link.packet_bytes if coded else
                                             link.worst_packet_bytes)[4]
        encode = records.stage_end[mb, 0] - records.stage_start[mb, 0]
        decode = records.stage_end[mb, 1] - records.stage_start[mb, 1]
        assert encode == pytest.approx(0.1 + (0.015 if coded else 0.010))
        assert decode == pytest.approx(0.1 + (0.013 if coded else 0.010))
    info = RunInfo(2, 8, 1000.0, 60.0)
    assert summary(records, info)["links"][0]["coded_window_share"] == pytest.approx(0.5, abs=0.05)


def test_without_a_code_method_every_window_of_a_coded_link_is_coded_and_none_on_a_plain_one():
    records, link = coded_pipeline(FixedPolicy(4))
    assert all(w.coded for w in records.windows)
    assert set(records.link_bytes.values()) == {link.packet_bytes[4]}
    info = RunInfo(2, 8, 1000.0, 60.0)
    assert summary(records, info)["links"][0]["coded_window_share"] == 1.0
    plain = LinkSpec(Trace.from_segments([0.0], [2.0], 1000.0), link.worst_packet_bytes,
                     EveryOtherWindowCoded(), link.tensor_shape)
    records = Pipeline([StageSpec(0.1), StageSpec(0.1)], [plain], SourceSpec(1000.0, 8),
                       allowed_bits=(2, 4), window=2).run(10.0)
    assert all(w.coded is None for w in records.windows)  # no coder: never asked
    assert "coded_window_share" not in summary(records, RunInfo(2, 8, 1000.0, 10.0))["links"][0]


def test_a_code_answer_that_is_not_a_bool_fails_the_run_saying_where():
    class Maybe(EveryOtherWindowCoded):
        def code(self, obs, bits):
            return "yes"

    with pytest.raises(PolicyFailed, match=r"window 0.*code must return a bool, got str"):
        coded_pipeline(Maybe())


def observation(mbps, coder_s):
    return Observation(
        now_s=0.0, window_index=3, window_len=8, items_per_microbatch=8, bytes_sent=0,
        send_s=0.0, measured_mbps=mbps, history_mbps=(), target_rate_items_per_s=10.0,
        tensor_shape=(8, 197, 768), allowed_bits=(2, 4), bits_last_window=(4,) * 8,
        packet_bytes={2: 80_000, 4: 160_000}, worst_packet_bytes={2: 100_000, 4: 200_000},
        coder_s=coder_s)


@pytest.mark.parametrize("mbps, coder_s, pays", [
    (10.0, {2: 0.001, 4: 0.001}, True),  # saves 32 ms a microbatch on the link for 1 ms
    (1000.0, {2: 0.001, 4: 0.001}, False),  # saves 0.32 ms for 1 ms
    (1000.0, {}, True),  # the coder's time unknown: code (a packet never grows)
    (None, {2: 0.001, 4: 0.001}, True),  # nothing measured yet
])
def test_coding_pays_when_the_link_time_it_saves_exceeds_the_coders(mbps, coder_s, pays):
    obs = observation(mbps, coder_s)
    assert coding_pays(obs, [4] * 8) is pays
    assert PlannerPolicy().code(obs, [4] * 8) is pays  # before any plan: the measured rate
