"""The real pipeline runtime: one process per stage over torch.distributed (gloo over TCP).

- ``python -m quantpipe_core.runtime --config cfg.toml --rank R``: one stage (one per device);
- ``python -m quantpipe_core.runtime.launch --config cfg.toml --out DIR``: every stage locally.

Same configuration, policies, codec and output files as the simulator. See docs/runtime.md.
"""
