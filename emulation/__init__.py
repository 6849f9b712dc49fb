"""Mininet emulation: real torch stages on trace-shaped links.

- `emulation.topology`: a chain of Mininet hosts, one per runtime rank, joined by direct veth
  links (no switch, no Open vSwitch), each link htb-shaped on its sending side, routed so that
  every rank reaches rank 0.
- `emulation.replay`: replays each link's trace with ``tc class change`` in place (the queue is
  kept), binned to at least 100 ms, on wall-clock time without drift.
- `emulation.cleanup`: stale Mininet shells and veths removed before a run, and clean-up on
  exit, error, Ctrl-C and SIGTERM.

Not built yet: ``python -m emulation.run`` (the runtime's ranks in the hosts) and the agreement
check against the simulator. See docs/emulation.md. Needs root and Debian's ``mininet``.
"""
