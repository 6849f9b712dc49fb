"""One TOML configuration that the simulator, the emulator and the real runtime all read.

Every field has a default, so no file, or an empty one, is a complete run; `default_toml()` shows
them all, each with its documentation (``python -m sim.run --print-default-config``). A value
that cannot work raises `ConfigError`, whose message names the file, the dotted field
(``links[1].scale``, indexes from 0) and why. Loading is pure and fast (no torch, no model): what
needs the model (cut ids, the middle split, ``target_rate = "auto"``) is resolved later, by the
code that loads it. Reference: docs/config.md.

The package: `fields` (how one value is read: its kind and where it sits), `schema` (the sections
and their fields: adding a field is one line there), `read` (a whole file, and the checks that
span fields) and `write` (TOML out).
"""

from quantpipe_core.config.fields import (
    SIM_ONLY_POLICIES,
    USER_CLASS,
    ConfigError,
    Where,
    check_names,
    did_you_mean,
    policy_names,
)
from quantpipe_core.config.read import config_from_dict, load_config, read_toml
from quantpipe_core.config.schema import (
    SECTIONS,
    Config,
    DeviceConfig,
    LinkConfig,
    ModelConfig,
    PolicyConfig,
    QuantConfig,
    RunConfig,
    SourceConfig,
    UtilityConfig,
)
from quantpipe_core.config.write import default_toml, to_toml

__all__ = [
    "SECTIONS",
    "SIM_ONLY_POLICIES",
    "USER_CLASS",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "LinkConfig",
    "ModelConfig",
    "PolicyConfig",
    "QuantConfig",
    "RunConfig",
    "SourceConfig",
    "UtilityConfig",
    "Where",
    "check_names",
    "config_from_dict",
    "default_toml",
    "did_you_mean",
    "load_config",
    "policy_names",
    "read_toml",
    "to_toml",
]
