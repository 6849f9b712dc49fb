"""Mininet emulation: the real runtime's torch stages on trace-shaped links, checked against the
simulator.

- ``python -m emulation.run TRACE``: the ranks in Mininet hosts, then the simulator on the same
  config and traces, and their agreement; `emulation.emulate` drives one emulated run.
- `emulation.topology`: a chain of Mininet hosts, one per runtime rank, joined by direct veth
  links (no switch, no Open vSwitch), each link htb-shaped on its sending side, routed so that
  every rank reaches rank 0.
- `emulation.replay`: replays each link's trace with ``tc class change`` in place (the queue is
  kept), binned to at least 100 ms, on wall-clock time without drift.
- `emulation.agreement`: how closely the simulated run predicts the emulated one, window by
  window (``python -m emulation.agreement`` compares two result folders).
- `emulation.cleanup`: stale Mininet shells and veths removed before a run, and clean-up on
  exit, error, Ctrl-C and SIGTERM.

See docs/emulation.md. Needs root and Debian's ``mininet``.
"""
