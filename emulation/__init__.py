"""Mininet emulation: real torch stages on trace-shaped links.

Not built yet: the emulator is its own issue. The package exists so that the project's
installed layout is fixed from the start.
"""
