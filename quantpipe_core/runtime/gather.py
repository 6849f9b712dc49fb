"""Every rank's end-of-run report at rank 0, through rank 0's store, each with its tag; a rank
still working keeps a heartbeat there so that rank 0 waits for it and gives up on a silent one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from quantpipe_core.runtime.auth import Session
from quantpipe_core.runtime.failure import StageFailure
from quantpipe_core.runtime.links import POLL_S

HEARTBEAT_S = 1.0
STORE_PREFIX = "quantpipe/"


class Gathering:
    """Rank `rank`'s part in collecting the reports."""

    def __init__(self, rank: int, world: int, store: dist.TCPStore, session: Session,
                 who: Callable[[int], str], timeout_s: float) -> None:
        self.rank, self.world, self.store, self.session = rank, world, store, session
        self.who, self.timeout_s = who, timeout_s
        self.reported = threading.Event()

    def heartbeat(self, addr: str, port: int) -> None:
        """A counter in rank 0's store, until this rank has reported (a thread of its own)."""
        try:
            store = dist.TCPStore(addr, port, self.world, False, timedelta(seconds=self.timeout_s))
            while not self.reported.wait(HEARTBEAT_S):
                store.add(f"{STORE_PREFIX}alive/{self.rank}", 1)
        except Exception:
            return  # rank 0 has gone: its store with it

    def gather(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        """On rank 0 every rank's report, its own first; elsewhere this rank's, once sent."""
        if self.rank != 0:
            body = json.dumps(mine).encode()
            self.reported.set()
            self.store.set(f"{STORE_PREFIX}report/{self.rank}",
                           self.session.tag(b"report", self.rank, body) + body)
            return [mine]
        return [mine, *(self.await_report(rank) for rank in range(1, self.world))]

    def await_report(self, rank: int) -> dict[str, Any]:
        """Rank `rank`'s report, waiting as long as its heartbeat goes on."""
        key, alive = f"{STORE_PREFIX}report/{rank}", f"{STORE_PREFIX}alive/{rank}"
        beats, seen = -1, time.monotonic()
        while not self.store.check([key]):
            now = self.store.add(alive, 0)
            if now != beats:
                beats, seen = now, time.monotonic()
            elif time.monotonic() - seen > self.timeout_s:
                raise StageFailure(f"{self.who(0)}: no report from {self.who(rank)} and no sign "
                                   f"of life for {self.timeout_s:g} s")
            time.sleep(POLL_S)
        data = self.store.get(key)
        tag, body = data[:self.session.tag_bytes], data[self.session.tag_bytes:]
        if not self.session.valid(tag, b"report", rank, body):
            raise StageFailure(f"{self.who(0)}: the report of {self.who(rank)} fails its "
                               "authentication tag (forged, or sent with another run key)")
        return json.loads(body)
