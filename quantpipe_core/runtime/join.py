"""Joining a run: the rendezvous store on rank 0, the run-key handshake, and one channel per
link (and one for credits), before any activation flows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from quantpipe_core.runtime.auth import NONCE_BYTES, PROOF_BYTES, Handshake, Session
from quantpipe_core.runtime.channel import Channel, recv_bytes, send_bytes
from quantpipe_core.runtime.failure import StageFailure, describe
from quantpipe_core.runtime.plan import RuntimePlan


def config_digest(plan: RuntimePlan) -> bytes:
    """What every rank must agree on: the model and its cuts, the codec, the policy, the source
    and the devices. Paths (a model folder, the links' traces) may differ between devices."""
    config = plan.config
    agreed = {
        "model": [Path(config.model.name).name, config.model.microbatch, config.model.tokens],
        "cuts": list(plan.cuts),
        "quant": dataclasses.asdict(config.quant),
        "policy": dataclasses.asdict(config.policy),
        "source": dataclasses.asdict(config.source),
        "devices": [device.name for device in config.devices],
    }
    return hashlib.sha256(json.dumps(agreed, sort_keys=True, default=str).encode()).digest()


@dataclass
class Joined:
    """A rank in a formed, authenticated group: its channels and the run's start time."""

    store: dist.TCPStore
    session: Session
    inlink: Channel | None  # from the previous stage; None on rank 0
    outlink: Channel | None  # to the next stage; None on the last rank
    credits: Channel  # rank 0 <-> the last rank, closed-loop credits
    t0: float  # rank 0's wall clock at the start, on every rank
    listener: socket.socket | None = None  # rank 0's store socket, kept open


@dataclass
class Joiner:
    """How rank `rank` of `world` joins: rank 0 serves the store on `addr` alone (torch's own
    listens on every interface), then proves and checks the run key (`auth.Handshake`)."""

    rank: int
    world: int
    addr: str
    port: int
    timeout_s: float
    key: bytes | None
    digest: bytes  # `config_digest` of the plan
    who: Callable[[int], str]  # a stage's name

    def join(self) -> Joined:
        timeout = timedelta(seconds=self.timeout_s)
        store, listener = self.rendezvous(timeout)
        dist.init_process_group("gloo", store=store, rank=self.rank, world_size=self.world,
                                timeout=timeout)
        session = self.authenticate()
        groups = [dist.new_group([k, k + 1], timeout=timeout) for k in range(self.world - 1)]
        credit_group = dist.new_group([0, self.world - 1], timeout=timeout)
        last = self.rank == self.world - 1
        inlink = (Channel(groups[self.rank - 1], self.rank - 1, self.rank - 1, session)
                  if self.rank > 0 else None)
        outlink = (Channel(groups[self.rank], self.rank + 1, self.rank, session)
                   if not last else None)
        credits = Channel(credit_group, self.world - 1 if self.rank == 0 else 0, -1, session)
        start = torch.tensor([time.time()], dtype=torch.float64)
        dist.broadcast(start, src=0)
        return Joined(store, session, inlink, outlink, credits, float(start.item()), listener)

    def rendezvous(self, timeout: timedelta) -> tuple[dist.TCPStore, socket.socket | None]:
        if self.rank != 0:
            return dist.TCPStore(self.addr, self.port, self.world, False, timeout), None
        try:
            listener = socket.create_server((self.addr, self.port), backlog=128)
        except OSError as error:
            raise StageFailure(f"{self.who(0)}: cannot listen on {self.addr}:{self.port}: "
                               f"{error.strerror or error}") from None
        store = dist.TCPStore(self.addr, self.port, self.world, True, timeout,
                              wait_for_workers=False, master_listen_fd=listener.fileno())
        return store, listener

    def authenticate(self) -> Session:
        """The challenge-response of `auth.Handshake`, before any activation flows."""
        handshake = Handshake(self.key, self.digest)
        name = self.who(self.rank)
        if self.rank == 0:
            salt = secrets.token_bytes(NONCE_BYTES)
            for peer in range(1, self.world):
                hello = handshake.hello(salt)
                self.send(peer, hello)
                answer = self.recv(peer, Handshake.ANSWER_BYTES)
                if refusal := handshake.check_answer(peer, hello, answer):
                    raise StageFailure(f"{name}: refused {self.who(peer)}: {refusal}")
                self.send(peer, handshake.proof_of_rank0(peer, hello, answer))
            return Session(self.key, salt)
        hello = self.recv(0, Handshake.HELLO_BYTES)
        answer = handshake.answer(self.rank, hello)
        self.send(0, answer)
        refusal = handshake.check_hello(self.rank, hello) or handshake.check_proof(
            self.rank, hello, answer, self.recv(0, PROOF_BYTES))
        if refusal:
            raise StageFailure(f"{name}: refused to run: {refusal}")
        return Session(self.key, hello[1:1 + NONCE_BYTES])

    def send(self, peer: int, data: bytes) -> None:
        try:
            send_bytes(data, peer)
        except Exception as error:
            raise self.failure(peer, error) from None

    def recv(self, peer: int, size: int) -> bytes:
        try:
            return bytes(recv_bytes(size, peer))
        except Exception as error:
            raise self.failure(peer, error) from None

    def failure(self, peer: int, error: BaseException) -> StageFailure:
        return StageFailure(f"{self.who(self.rank)}: {self.who(peer)} did not complete the "
                            f"run-key handshake ({describe(error)})")
