"""Codec speed and error on a ViT-Base-sized microbatch (8 x 197 x 768 float32), and the codec
against the digits ViT's own compute.

For every codec scheme (a `Codec` label: clipping method / transform / granularity) and
bitwidth: encode and decode speed (input float32 MB per second), wire bytes, mean squared error,
and encode time relative to plain per-tensor min-max at the same bitwidth. The schemes are timed
in turns, round after round, so that a busy machine slows them alike and the ratios hold; times
are medians. Two tensors: a block output (Laplace body with a few outlier channels, as in
ViT/BERT hidden states) and a post-GeLU tensor. Ends with the codec issue's speed goals.

    python benchmarks/codec.py [--repeats 25] [--bits 2,4,8] [--codecs ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch

from quantpipe_core.cli import bits_list, codec_list
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models import load_model
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.quant import DEFAULT, Codec, decode, encode
from quantpipe_core.tasks import task_for
from quantpipe_core.timing import medians_in_turns

SHAPE = (8, 197, 768)
PLAIN_MINMAX = "minmax/none/tensor"
PLAIN_DS = "ds-aciq/none/tensor"
TOKEN_DS = "ds-aciq/none/token"
CODECS = (PLAIN_MINMAX, "aciq/none/tensor", PLAIN_DS, "minmax/none/token", TOKEN_DS,
          "minmax/hadamard/auto", "aciq/hadamard/auto", DEFAULT.label,
          f"{DEFAULT.label}/o4")


def block_output(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.distributions.Laplace(0.0, 0.5).sample(SHAPE)
    outliers = torch.randperm(SHAPE[-1], generator=gen)[:4]
    x[..., outliers] *= 20.0
    return x


def post_gelu(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.gelu(2.0 * torch.randn(SHAPE, generator=gen))


def measure(x: torch.Tensor, bits: int, labels: list[str], repeats: int) -> list[dict]:
    megabytes = x.numel() * 4 / 1e6
    codecs = {label: Codec.parse(label) for label in labels}
    packets = {label: encode(x, bits, **c.options()) for label, c in codecs.items()}
    calls: dict[str, Callable[[], object]] = {}
    for label, c in codecs.items():
        calls[f"enc {label}"] = lambda c=c: encode(x, bits, **c.options())
        calls[f"dec {label}"] = lambda p=packets[label]: decode(p)
    seconds = medians_in_turns(calls, repeats)
    base = seconds[f"enc {labels[0]}"]
    return [{
        "bits": bits,
        "codec": label,
        "encode_ms": seconds[f"enc {label}"] * 1e3,
        "encode_MBps": megabytes / seconds[f"enc {label}"],
        "decode_MBps": megabytes / seconds[f"dec {label}"],
        "x_minmax": seconds[f"enc {label}"] / base,
        "wire_bytes": len(packets[label]),
        "mse": torch.mean((decode(packets[label]) - x) ** 2).item(),
    } for label in labels]


def digits_budget(repeats: int) -> dict[str, float]:
    """The default scheme's encode plus decode at the digits ViT's fragile cut (embed, 2 bits,
    microbatch 8, one thread) against the whole model's compute on the same microbatch."""
    torch.set_num_threads(1)
    model = load_model("digits-vit")
    microbatch = task_for(model, 8, 8).microbatches[0]
    with torch.no_grad():
        carry = model.run(microbatch, 0, model.cut_index("embed") + 1)
        frame = encode_carry(carry, 2)
        seconds = medians_in_turns({
            "model": lambda: model(microbatch),
            "encode": lambda: encode_carry(carry, 2),
            "decode": lambda: decode_carry(frame),
        }, repeats)
    torch.set_num_threads(2)
    return {key: value * 1e3 for key, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=25, help="timed rounds (median)")
    parser.add_argument("--bits", type=bits_list(allow_float=False), default="2,4,8",
                        help="comma-separated bitwidths (default 2,4,8)")
    parser.add_argument("--codecs", type=codec_list, default=",".join(CODECS),
                        help="comma-separated codec labels; the first is the x-minmax base "
                        f"(default: {', '.join(CODECS)})")
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--system-heap", action="store_true",
                        help="leave glibc's mmap threshold as it is (the runtime's stage processes "
                        "raise it, quantpipe_core.heap)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    kept = not args.system_heap and keep_large_allocations()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {SHAPE}, "
          f"median of {args.repeats} rounds in turns, large buffers kept in the heap: {kept}")
    rows = []
    for name, x in (("block-output", block_output()), ("post-gelu", post_gelu())):
        print(f"\n{name}\n{'bits':>4} {'codec':<28} {'enc MB/s':>9} {'dec MB/s':>9} "
              f"{'x minmax':>8} {'wire B':>9} {'mse':>10}")
        for bits in args.bits:
            for row in measure(x, bits, args.codecs, args.repeats):
                print(f"{bits:>4} {row['codec']:<28} {row['encode_MBps']:>9.0f} "
                      f"{row['decode_MBps']:>9.0f} {row['x_minmax']:>8.2f} "
                      f"{row['wire_bytes']:>9} {row['mse']:>10.3g}")
                rows.append(row | {"data": name})
    budget = digits_budget(args.repeats)
    print(f"\ndigits ViT, embed cut, 2 bits, microbatch 8, 1 thread: model {budget['model']:.2f}"
          f" ms, default encode {budget['encode']:.2f} ms + decode {budget['decode']:.2f} ms")
    print("\ngoals (block-output tensor):")
    cell = {(r["bits"], r["codec"]): r for r in rows if r["data"] == "block-output"}

    def goal(text: str, value: float, ok: bool, unit: str = "") -> None:
        print(f"  {text}: {value:.2f}{unit} {'ok' if ok else 'MISSED'}")

    for bits in args.bits:
        for label, limit in ((PLAIN_DS, 2.0), (DEFAULT.label, 2.5), (TOKEN_DS, 3.0)):
            if (bits, label) in cell:
                ratio = cell[bits, label]["x_minmax"]
                goal(f"{label} encode <= {limit}x minmax at {bits} bits", ratio, ratio <= limit,
                     "x")
    if (8, PLAIN_MINMAX) in cell:
        speed = cell[8, PLAIN_MINMAX]["encode_MBps"]
        goal("minmax encode >= 2000 MB/s at 8 bits", speed, speed >= 2000, " MB/s")
    slowest = min(rows, key=lambda r: r["decode_MBps"])
    goal(f"every scheme decodes >= 1000 MB/s (slowest: {slowest['codec']}, {slowest['bits']} "
         f"bits, {slowest['data']})", slowest["decode_MBps"], slowest["decode_MBps"] >= 1000,
         " MB/s")
    codec_ms = budget["encode"] + budget["decode"]
    goal("digits ViT: default encode + decode <= the model's compute", codec_ms / budget["model"],
         codec_ms <= budget["model"], "x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "digits_ms": budget}, f, indent=1)


if __name__ == "__main__":
    main()
