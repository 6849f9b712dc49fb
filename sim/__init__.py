"""Trace-driven SimPy model of the pipeline (`python -m sim.run trace.csv`).

Not built yet: the simulator is its own issue. The package exists so that the project's
installed layout is fixed from the start.
"""
