"""What authenticating a frame costs: the runtime's Poly1305 tag (`auth.Session.tag`, as
`channel.Channel.send_frame` computes it, and once more to check it on arrival) against the
encode of the same frame, on a ViT-Base-sized microbatch (8 x 197 x 768 float32).

Timed in turns, round after round, so that a busy machine slows both alike; medians. The goal
(issue 14): tagging plus checking a frame costs < 5 % of its encode at 8 bits.

    python -m benchmarks.frame_auth [--repeats 25] [--bits 2,4,8,16]
"""

from __future__ import annotations

import argparse
import secrets

from benchmarks.codec import PLAIN_MINMAX, block_output
from quantpipe_core.cli import bits_list
from quantpipe_core.models.carry import encode_carry
from quantpipe_core.quant import DEFAULT
from quantpipe_core.runtime.auth import Session
from quantpipe_core.timing import medians_in_turns

GOAL_SHARE = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=25, help="timed rounds (median)")
    parser.add_argument("--bits", type=bits_list(allow_float=False), default=[2, 4, 8, 16],
                        help="bitwidths, comma-separated (default 2,4,8,16)")
    args = parser.parse_args()
    session = Session(secrets.token_bytes(32), secrets.token_bytes(32))
    carry = {"hidden": block_output()}
    print(f"8x197x768 float32, median of {args.repeats} rounds in turns")
    print(f"{'bits':>4} {'frame KB':>9} {'tag+check ms':>13} {'encode ms':>10} {'share':>7} "
          f"{'minmax ms':>10} {'share':>7}")
    shares = {}
    for bits in args.bits:
        frame = encode_carry(carry, bits, DEFAULT)

        def tag_and_check(frame: bytes = frame, bits: int = bits) -> bool:
            tag = session.tag(b"frame", 0, 1, bits, frame)
            return session.valid(tag, b"frame", 0, 1, bits, frame)

        seconds = medians_in_turns({
            "auth": tag_and_check,
            "default": lambda bits=bits: encode_carry(carry, bits, DEFAULT),
            "minmax": lambda bits=bits: encode_carry(carry, bits, PLAIN_MINMAX),
        }, args.repeats)
        shares[bits] = seconds["auth"] / seconds["default"]
        print(f"{bits:>4} {len(frame) / 1e3:>9.1f} {seconds['auth'] * 1e3:>13.3f} "
              f"{seconds['default'] * 1e3:>10.2f} {shares[bits]:>7.1%} "
              f"{seconds['minmax'] * 1e3:>10.2f} {seconds['auth'] / seconds['minmax']:>7.1%}")
    if 8 in shares:
        verdict = "met" if shares[8] < GOAL_SHARE else "NOT met"
        print(f"goal: tag+check < {GOAL_SHARE:.0%} of the default encode at 8 bits: "
              f"{shares[8]:.1%} ({verdict})")


if __name__ == "__main__":
    main()
