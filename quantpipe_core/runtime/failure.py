"""How a rank fails: the first fault any of its threads saw, and messages that say where.

Every message starts with the stage that speaks ("stage 1 (phone): ..."); an error on a link
or the credit channel is that stage's own (a forged message it refused, a fault it raised) or
its peer's (a peer gone or silent past the timeout), and says which.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from quantpipe_core.runtime.channel import ForgedMessage


class StageFailure(RuntimeError):
    """A fault that ends the run; the message names the stage and the cause."""


class Failure:
    """The first fault any thread of this rank saw."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.message = ""
        self.lock = threading.Lock()

    def set(self, message: str) -> None:
        with self.lock:
            if not self.event.is_set():
                self.message = message
                self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise StageFailure(self.message)


def describe(error: BaseException) -> str:
    """The first line of an error, without gloo's source path and its generic advice."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return text.split(". This is typically")[0].split("] ", 1)[-1]


class Blame:
    """Messages for errors seen by stage `name`: `who(rank)` names any stage."""

    def __init__(self, name: str, who: Callable[[int], str], timeout_s: float) -> None:
        self.name, self.who, self.timeout_s = name, who, timeout_s

    def on_link(self, where: str, peer: int, error: BaseException) -> str:
        """`error` on a link or the credit channel (`where`, e.g. "on link 0"): a stage's own
        failure as it is, a forged message under this stage's name, anything else as the
        peer's fault."""
        if isinstance(error, StageFailure):
            return str(error)
        if isinstance(error, ForgedMessage):
            return f"{self.name}: {error}"
        text = describe(error)
        if "timed out" in text.lower() or "timeout" in text.lower():
            cause = f"no answer from {self.who(peer)} {where} within {self.timeout_s:g} s"
        else:
            cause = f"{self.who(peer)} {where} is gone or the link broke ({text})"
        return f"{self.name}: {cause}"
