"""The run configuration: one TOML schema, complete defaults, and errors that say where and why."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quantpipe_core import names
from quantpipe_core.config import (
    SECTIONS,
    Config,
    ConfigError,
    config_from_dict,
    default_toml,
    load_config,
    to_toml,
)

THREE_DEVICES = """
[model]
name = "digits-vit"
microbatch = 4
cuts = ["block1.gelu", "block3.attn"]

[quant]
clip = "aciq"
allowed_bits = [8, 2, 4, 32]

[policy]
name = "controller"
window = 6
params = { gain = 0.3, utilization = 0.8 }

[source]
mode = "closed"
target_rate = 120
max_in_flight = 3

[[devices]]
name = "camera"
speed = 0.5
threads = 2
memory_mb = 512

[[devices]]
name = "gateway"
profile = "profiles/gateway.json"

[[devices]]
name = "server"
speed = 4

[[links]]
trace = "traces/wifi.csv"
format = "csv"
scale = 30
latency_s = 0.002

[[links]]
trace = "/data/lte.log"
format = "mahimahi"
end = "hold"
bin_s = 0.5

[run]
duration_s = 60
seed = 7
"""


def write(folder: Path, text: str, name: str = "run.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(folder: Path, text: str) -> str:
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# ----- defaults -------------------------------------------------------------------------------


def test_no_file_and_an_empty_file_are_the_same_complete_run(tmp_path):
    assert load_config() == load_config(write(tmp_path, ""))


def test_the_defaults_are_the_documented_ones():
    cfg = load_config()
    assert (cfg.model.name, cfg.model.microbatch, cfg.model.tokens) == ("vit-base", 8, 32)
    assert (cfg.model.cuts, cfg.model.partition) == ((), "manual")
    assert (cfg.quant.clip, cfg.quant.transform, cfg.quant.granularity) == (
        "ds-aciq", "hadamard", "auto")
    assert (cfg.quant.outliers, cfg.quant.codec) == ("auto", "ds-aciq/hadamard/auto")
    assert cfg.quant.allowed_bits == (2, 3, 4, 6, 8, 16)
    assert (cfg.policy.name, cfg.policy.window, cfg.policy.params) == ("quantpipe", 8, {})
    assert (cfg.source.mode, cfg.source.target_rate, cfg.source.max_in_flight) == (
        "open", "auto", 4)
    assert [d.name for d in cfg.devices] == ["stage0", "stage1"]
    assert all((d.profile, d.speed, d.threads, d.memory_mb) == ("", 1.0, 1, 0)
               for d in cfg.devices)
    assert len(cfg.links) == 1
    link = cfg.links[0]
    assert (link.trace, link.format, link.scale, link.bin_s) == ("", "auto", 1.0, 0.0)
    assert (link.end, link.floor_mbps, link.latency_s) == ("loop", 0.01, 0.0)
    assert (cfg.run.duration_s, cfg.run.metrics_interval_s, cfg.run.seed) == (0.0, 5.0, 0)


def test_default_toml_loads_to_the_defaults_and_documents_every_field(tmp_path):
    text = default_toml()
    assert load_config(write(tmp_path, text)) == load_config()
    assert all(len(line) <= 100 for line in text.splitlines())
    parts = re.split(r"^\[\[?(\w+)\]\]?$", text, flags=re.M)
    first_blocks = dict(reversed(list(zip(parts[1::2], parts[2::2], strict=True))))
    for section, fields in load_config().to_dict().items():
        fields = fields[0] if isinstance(fields, list) else fields
        lines = [line for line in first_blocks[section].splitlines() if " = " in line]
        assert [line.split(" = ")[0] for line in lines] == list(fields)
        assert all("  # " in line for line in lines), f"[{section}] has an undocumented field"


def test_devices_without_names_are_named_by_position(tmp_path):
    cfg = load_config(write(tmp_path, "[[devices]]\n[[devices]]\nname = 'edge'\n[[devices]]\n"))
    assert [d.name for d in cfg.devices] == ["stage0", "edge", "stage2"]
    assert len(cfg.links) == 2


def test_one_device_is_a_pipeline_without_links(tmp_path):
    cfg = load_config(write(tmp_path, "[[devices]]\nname = 'solo'\n"))
    assert (len(cfg.devices), cfg.links) == (1, ())


def test_allowed_bits_are_sorted_and_ints_are_taken_as_floats(tmp_path):
    cfg = load_config(write(tmp_path, "[quant]\nallowed_bits = [8, 2, 32]\n[[devices]]\nspeed = 2"))
    assert cfg.quant.allowed_bits == (2, 8, 32)
    assert cfg.devices[0].speed == 2.0 and isinstance(cfg.devices[0].speed, float)


def test_to_toml_writes_a_file_that_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(write(tmp_path, THREE_DEVICES)).replace(
        **{"policy.name": "my_policies:Cautious", "policy.params": {"strict": True, "k": 2}}
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert load_config(write(elsewhere, to_toml(cfg))) == cfg


# ----- a full example -------------------------------------------------------------------------


def test_a_three_device_config_with_its_own_traces_loads(tmp_path):
    cfg = load_config(write(tmp_path, THREE_DEVICES))
    assert [d.name for d in cfg.devices] == ["camera", "gateway", "server"]
    assert cfg.model.cuts == ("block1.gelu", "block3.attn")
    assert cfg.quant.allowed_bits == (2, 4, 8, 32)
    assert cfg.policy.params == {"gain": 0.3, "utilization": 0.8}
    assert cfg.source.target_rate == 120.0
    assert cfg.devices[1].profile == str(tmp_path / "profiles" / "gateway.json")
    assert [link.trace for link in cfg.links] == [str(tmp_path / "traces" / "wifi.csv"),
                                                  "/data/lte.log"]
    assert (cfg.links[0].scale, cfg.links[1].end, cfg.links[1].bin_s) == (30.0, "hold", 0.5)
    assert (cfg.run.duration_s, cfg.run.seed) == (60.0, 7)


def test_relative_paths_start_at_the_config_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    path = write(tmp_path, """
        [model]
        name = "../models/tiny"
        [[devices]]
        profile = "../profiles/a.json"
        [[devices]]
        [[links]]
        trace = "traces/wifi.csv"
        """, name="configs/run.toml")
    cfg = load_config(Path("configs/run.toml"))
    assert cfg.model.name == str(tmp_path / "models" / "tiny")
    assert cfg.devices[0].profile == str(tmp_path / "profiles" / "a.json")
    assert cfg.devices[1].profile == ""  # none: the model's shipped profile
    assert cfg.links[0].trace == str(path.parent / "traces" / "wifi.csv")


# ----- errors: the file, the dotted field, the reason -----------------------------------------

BAD_VALUES = [
    # (TOML, dotted field, part of the reason)
    ("[model]\nmicrobatch = 0", "model.microbatch", "must be >= 1, got 0"),
    ("[model]\nmicrobatch = 2.0", "model.microbatch", "expected an integer, got float 2.0"),
    ("[model]\nmicrobatch = true", "model.microbatch", "expected an integer, got boolean true"),
    ("[model]\ntokens = '32'", "model.tokens", 'expected an integer, got string "32"'),
    ("[model]\nname = 3", "model.name", "expected a string, got integer 3"),
    ("[model]\nname = 'vit-bse'", "model.name", "did you mean 'vit-base'?"),
    ("[model]\ncuts = 'block5.out'", "model.cuts", "expected an array"),
    ("[model]\ncuts = [1]", "model.cuts[0]", "expected a string"),
    ("[model]\ncuts = ['']", "model.cuts[0]", "must not be empty"),
    ("[model]\ncuts = ['a', 'a']", "model.cuts[1]", "listed twice"),
    ("[model]\npartition = 'greedy'", "model.partition", "'greedy' is not one of manual, auto"),
    ("[quant]\nclip = 'ds_aciq'", "quant.clip", "did you mean 'ds-aciq'?"),
    ("[quant]\ngranularity = 'channel'", "quant.granularity", "not one of tensor, token"),
    ("[quant]\nallowed_bits = []", "quant.allowed_bits", "at least one bitwidth"),
    ("[quant]\nallowed_bits = [4, 17]", "quant.allowed_bits[1]", "1..16 or 32"),
    ("[quant]\nallowed_bits = [0]", "quant.allowed_bits[0]", "1..16 or 32"),
    ("[quant]\nallowed_bits = [4, 8.0]", "quant.allowed_bits[1]", "expected an integer"),
    ("[quant]\nallowed_bits = [4, 4]", "quant.allowed_bits[1]", "listed twice"),
    ("[quant]\nallowed_bits = 8", "quant.allowed_bits", "expected an array, got integer 8"),
    ("[policy]\nname = 'quantpip'", "policy.name", "did you mean 'quantpipe'?"),
    ("[policy]\nname = 'fixed:x'", "policy.name", "'fixed:' takes a bitwidth"),
    ("[policy]\nname = 'my policies:Greedy'", "policy.name", "'module:Class'"),
    ("[policy]\nwindow = 0", "policy.window", "must be >= 1"),
    ("[policy]\nparams = 3", "policy.params", "expected a table, got integer 3"),
    ("[source]\nmode = 'burst'", "source.mode", "not one of open, closed"),
    ("[source]\ntarget_rate = 0", "source.target_rate", "must be > 0, got 0"),
    ("[source]\ntarget_rate = -5.0", "source.target_rate", "must be > 0"),
    ("[source]\ntarget_rate = 'fast'", "source.target_rate", 'a number > 0 or "auto"'),
    ("[source]\ntarget_rate = nan", "source.target_rate", "must be finite"),
    ("[source]\nmax_in_flight = 0", "source.max_in_flight", "must be >= 1"),
    ("[[devices]]\n[[devices]]\nspeed = 0", "devices[1].speed", "must be > 0, got 0"),
    ("[[devices]]\nspeed = 'fast'", "devices[0].speed", 'expected a number, got string "fast"'),
    ("[[devices]]\nthreads = 0", "devices[0].threads", "must be >= 1"),
    ("[[devices]]\nmemory_mb = -1", "devices[0].memory_mb", "must be >= 0, got -1"),
    ("[[devices]]\nname = ''", "devices[0].name", "must not be empty"),
    ("[[devices]]\nprofile = 3", "devices[0].profile", "expected a string"),
    ("[[links]]\nscale = -1", "links[0].scale", "must be > 0, got -1"),
    ("[[links]]\nscale = inf", "links[0].scale", "must be finite"),
    ("[[links]]\nformat = 'pcap'", "links[0].format", "not one of auto, csv, mahimahi, mbps-log"),
    ("[[links]]\nbin_s = -0.5", "links[0].bin_s", "must be >= 0"),
    ("[[links]]\nend = 'wrap'", "links[0].end", "not one of loop, hold"),
    ("[[links]]\nfloor_mbps = -1", "links[0].floor_mbps", "must be >= 0"),
    ("[[links]]\nlatency_s = false", "links[0].latency_s", "expected a number, got boolean"),
    ("[[links]]\ntrace = ['a.csv']", "links[0].trace", "expected a string, got array"),
    ("[run]\nduration_s = -1", "run.duration_s", "must be >= 0"),
    ("[run]\nmetrics_interval_s = 0", "run.metrics_interval_s", "must be > 0"),
    ("[run]\nseed = -1", "run.seed", "must be >= 0"),
    ("[run]\nseed = 1.5", "run.seed", "expected an integer, got float 1.5"),
    ("[[links]]\nfloor_mbps = 1e308", "links[0].floor_mbps", "must be <= 1e+09, got 1e+308"),
    ("[policy]\nname = 'controller'\nparams = { gain = 'high' }", "policy.params.gain",
     'expected a number, got string "high"'),
    ("[policy]\nname = 'controller'\nparams = { split = 1 }", "policy.params.split",
     "expected a boolean, got integer 1"),
    ("[policy]\nname = 'fixed'\nparams = { bits = 8.0 }", "policy.params.bits",
     "expected an integer, got float 8.0"),
    ("[policy]\nname = 'quantpipe'\nparams = { initial_bits = '8' }",
     "policy.params.initial_bits", 'expected an integer, got string "8"'),
    ("[policy]\nname = 'planner'\nparams = { prior = [0.5, 'x'] }", "policy.params.prior",
     "expected an array, each a number, got array"),
]

BAD_NAMES = [
    ("[model]\nmicrobach = 8", "model.microbach", "unknown field 'microbach'; did you mean "
                                                  "'microbatch'?"),
    ("[modle]\nname = 'vit-base'", "modle", "unknown section 'modle'; did you mean 'model'?"),
    ("[[devices]]\n[[devices]]\nthread = 2", "devices[1].thread", "did you mean 'threads'?"),
    ("[[links]]\nscal = 2", "links[0].scal", "did you mean 'scale'?"),
    ("[run]\nfoo = 1", "run.foo", "unknown field 'foo' (known: duration_s, metrics_interval_s, "
                                  "seed)"),
    ("microbatch = 8", "microbatch", "a field of [model]"),
    ("model = 'vit-base'", "model", "expected a table, got string"),
    ("[devices]\nname = 'a'", "devices", "expected an array of tables ([[devices]]), got table"),
    ("devices = ['a']", "devices[0]", "expected a table, got string"),
]


@pytest.mark.parametrize(("text", "field", "reason"), BAD_VALUES + BAD_NAMES,
                         ids=[field for _, field, _ in BAD_VALUES + BAD_NAMES])
def test_an_error_names_the_file_the_field_and_why(tmp_path, text, field, reason):
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'run.toml'}: {field}: "), message
    assert reason in message


def test_an_unknown_name_gets_the_closest_known_one(tmp_path):
    message = error_of(tmp_path, "[[devices]]\n[[devices]]\n[[devices]]\n"
                                 "[[links]]\n[[links]]\nscal = 30\n")
    assert message == (
        f"{tmp_path / 'run.toml'}: links[1].scal: unknown field 'scal'; did you mean 'scale'? "
        "(known: trace, format, scale, bin_s, end, floor_mbps, latency_s, codec, "
        "payload_share)"
    )


def test_a_model_name_that_is_neither_built_in_nor_a_folder_is_refused(tmp_path):
    message = error_of(tmp_path, "[model]\nname = 'my-bert'")
    assert f"there is no folder {tmp_path / 'my-bert'}" in message


def test_a_file_that_is_missing_or_not_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read it"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"run\.toml: not valid TOML"):
        load_config(write(tmp_path, "[model\n"))


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"[model]\n\xff\xfe = 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML: 'utf-8'"):
        load_config(path)


@pytest.mark.parametrize("text", [
    "[model]\nmicrobatch = '{huge}'",
    "[model]\nname = '{huge}'",
    "[quant]\nclip = '{huge}'",
    "[model]\n{huge} = 1",
])
def test_a_huge_bad_value_or_name_is_cut_in_the_error(tmp_path, text):
    message = error_of(tmp_path, text.replace("{huge}", "x" * 5_000_000))
    assert message.startswith(f"{tmp_path / 'run.toml'}: model") or "quant.clip" in message
    assert len(message) < 1000 and "xxx..." in message


def test_built_in_policy_parameters_of_the_right_types_load():
    params = {"gain": 1, "split": True, "band": 0.2}
    assert config_from_dict({"policy": {"name": "controller", "params": params}}).policy.params \
        == params
    planner = {"prior": [0.5, 1], "initial_bits": 4, "history": 3}
    assert config_from_dict({"policy": {"name": "planner", "params": planner}})


def test_a_dict_names_itself_in_errors():
    with pytest.raises(ConfigError, match=r"^<dict>: run.seed: "):
        config_from_dict({"run": {"seed": "zero"}})
    with pytest.raises(ConfigError, match=r"^from-cli: model: expected a table"):
        config_from_dict({"model": []}, source="from-cli")


# ----- rules across fields --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "reason"), [
    ("[[devices]]\n[[devices]]\n[[devices]]\n[[links]]",
     "links", "1 link for 3 devices: a chain of 3 devices has 2 links"),
    ("[[devices]]\n[[links]]", "links", "1 link for 1 device"),
    ("devices = []", "devices", "at least one device"),
    ("[[devices]]\nname = 'a'\n[[devices]]\nname = 'b'\n[[devices]]\nname = 'a'",
     "devices[2].name", "'a' is already the name of devices[0]"),
    ("[model]\ncuts = ['block5.out', 'block7.out']", "model.cuts", "2 cuts for 2 devices"),
    ("[model]\ncuts = ['block5.out']\npartition = 'auto'", "model.cuts",
     'partition = "auto" picks the cuts itself'),
    ("[policy]\nname = 'fixed:5'", "policy.name",
     "'fixed:5' sends 5 bits, which is not in quant.allowed_bits [2, 3, 4, 6, 8, 16]"),
    ("[policy]\nname = 'fixed'\n[quant]\nallowed_bits = [2, 4]", "policy.name",
     "'fixed' sends 8 bits"),
    ("[policy]\nname = 'fixed'\nparams = { bits = 5 }", "policy.params.bits", "sends 5 bits"),
    ("[policy]\nname = 'fixed:4'\nparams = { bits = 4 }", "policy.params.bits",
     "already gives the bitwidth"),
    ("[policy]\nname = 'fixed:40'", "policy.name", "1..16 or 32"),
    ("[policy]\nname = 'controller'\nparams = { gainn = 0.3 }", "policy.params.gainn",
     "unknown controller parameter 'gainn'; did you mean 'gain'?"),
    ("[policy]\nname = 'controller'\nparams = { utilization = 2.0 }", "policy.params",
     "utilization set point must be in (0, 1]"),
])
def test_rules_across_fields(tmp_path, text, field, reason):
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'run.toml'}: {field}: "), message
    assert reason in message


@pytest.mark.parametrize("text", [
    "[model]\npartition = 'auto'\n[[devices]]\n[[devices]]\n[[devices]]",
    "[model]\ncuts = ['block5.out']",
    "[policy]\nname = 'fixed:4'",
    "[policy]\nname = 'fixed:32'",  # float32 is always allowed
    "[policy]\nname = 'fixed'\nparams = { bits = 16 }",
    "[policy]\nname = 'oracle'",
    "[policy]\nname = 'mpc'\nparams = { horizon = 4 }",
    # a user's class is not imported here, so its module need not exist yet
    "[policy]\nname = 'no_such_module.sub:Greedy'\nparams = { anything = [1, 2] }",
    "[policy]\nname = 'mpc:MyPolicy'\nparams = { anything = 1 }",  # a module named like one
])
def test_consistent_configs_load(tmp_path, text):
    load_config(write(tmp_path, text))


# ----- replace and to_dict --------------------------------------------------------------------


def test_replace_sets_dotted_fields_and_every_item_with_a_star(tmp_path):
    cfg = load_config(write(tmp_path, THREE_DEVICES))
    new = cfg.replace(**{"policy.name": "fixed:4", "policy.params": {},
                         "source.target_rate": 10.0, "links.*.scale": 30.0,
                         "devices.2.speed": 8, "devices[0].threads": 4,
                         "policy.window": 2})
    assert (new.policy.name, new.policy.window, new.source.target_rate) == ("fixed:4", 2, 10.0)
    assert [link.scale for link in new.links] == [30.0, 30.0]
    assert [d.speed for d in new.devices] == [0.5, 1.0, 8.0]
    assert new.devices[0].threads == 4
    assert new.links[0].trace == cfg.links[0].trace  # everything else is kept
    assert cfg.policy.name == "controller"  # the original is unchanged


def test_replace_can_set_one_policy_parameter():
    cfg = load_config().replace(**{"policy.name": "controller", "policy.params.gain": 0.2})
    assert cfg.policy.params == {"gain": 0.2}


def test_replace_checks_again(tmp_path):
    cfg = load_config(write(tmp_path, THREE_DEVICES))
    with pytest.raises(ConfigError, match=r"^<override>: links\[0\]\.scale: must be > 0"):
        cfg.replace(**{"links.*.scale": -1.0})
    with pytest.raises(ConfigError, match=r"^<override>: policy.nme: .*did you mean 'name'"):
        cfg.replace(**{"policy.nme": "mpc"})
    with pytest.raises(ConfigError, match=r"^<override>: devices.3.speed: '3' is neither"):
        cfg.replace(**{"devices.3.speed": 2.0})
    with pytest.raises(ConfigError, match=r"^<override>: model.cuts: 2 cuts for 2 devices"):
        cfg.replace(**{"devices": [{"name": "a"}, {"name": "b"}], "links": [{}]})


def test_to_dict_is_plain_data_that_reads_back_to_the_same_config(tmp_path):
    (tmp_path / "tiny").mkdir()
    cfg = load_config(write(tmp_path, THREE_DEVICES.replace('"digits-vit"', '"tiny"')))
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert config_from_dict(data) == cfg
    assert config_from_dict(load_config().to_dict()) == load_config()
    assert isinstance(cfg, Config) and data["links"][0]["trace"] == cfg.links[0].trace


# ----- loading stays pure ---------------------------------------------------------------------


def test_loading_a_config_imports_no_torch():
    code = ("import sys; from quantpipe_core.config import load_config; load_config(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_config_takes_its_names_from_the_one_module_of_names():
    from quantpipe_core.models.load import BUILT_IN_FOLDERS
    from quantpipe_core.quant.clipping import BUILDERS

    fields = {f.name: f.metadata["kind"] for s in SECTIONS if not s.many
              for f in dataclasses.fields(s.cls)}
    assert fields["clip"].options == tuple(names.CLIP_METHODS) == tuple(BUILDERS)
    assert fields["granularity"].options == names.GRANULARITIES
    assert fields["transform"].options == names.TRANSFORMS
    assert tuple(BUILT_IN_FOLDERS) == names.BUILTIN_MODELS


def test_a_registry_that_misses_a_declared_name_fails_at_import():
    with pytest.raises(RuntimeError, match="add the new name to both"):
        names.check_registry("clipping methods", {"minmax": None}, ("minmax", "new"))


def test_the_reference_shows_the_current_defaults_and_its_examples_run(tmp_path, monkeypatch):
    reference = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    assert default_toml() in reference
    assert default_toml() in (Path(__file__).parents[1] / "docs" / "index.md").read_text()
    example = reference.split("## Example")[1].split("```toml\n")[1].split("```")[0]
    write(tmp_path, example)
    monkeypatch.chdir(tmp_path)
    exec(reference.split("```python\n")[1].split("```")[0], {})  # it loads run.toml


def test_quant_options_name_a_codec_and_bad_ones_are_refused(tmp_path):
    from quantpipe_core.quant import Codec

    cfg = load_config(write(tmp_path, '[quant]\nclip = "aciq"\ntransform = "none"\n'
                                      'granularity = "token"\noutliers = 2\n'))
    assert cfg.quant.codec == "aciq/none/token/o2" == Codec.parse(cfg.quant.codec).label
    for bad, message in (('transform = "fft"', "'fft' is not one of none, hadamard"),
                         ("outliers = -1", "must be >= 0"),
                         ('granularity = "chanel"', "'chanel' is not one of tensor, token, auto")):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, f"[quant]\n{bad}\n"))
