"""QuantPipe core: what the simulator, the emulator and real devices share, so that the three
agree on what a run is.

- `config`: the one TOML run configuration; `names`: the names and limits every module checks;
- `quant`: the activation codec (clipping, transforms, bit packing, the wire format);
- `models`, `partition`, `profiles`, `profile`, `evaluate`: staged models, where to cut them, and
  their measured compute times and accuracy (`datasets`, `tasks`: what accuracy is scored on;
  `timing`, `heap`: steady measurements);
- `policy`, `utility`, `sender`: the bitwidth policies, how a run is scored, and the sending
  side's loop around a policy;
- `trace`, `trace_generators`: bandwidth traces; `plan`: a config resolved into stages and links;
- `runtime`: the torch.distributed ranks (``python -m quantpipe_core.runtime``);
- `cli`, `run_command`, `formatting`, `results`: what the commands share (options, errors,
  numbers, result files).
"""
