"""QuantPipe core: what the simulator, the emulator and real devices share.

Only the activation codec (`quantpipe_core.quant`) exists so far; stage partitioning, policies,
models and the runtime arrive with their own issues.
"""
