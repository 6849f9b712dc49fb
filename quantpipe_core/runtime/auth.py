"""Who may join a run, and which messages are genuine.

Every rank of a run holds the same run key (a file, or the ``QUANTPIPE_RUN_KEY`` environment
variable: never the command line, where ``ps`` shows it). When the group forms, rank 0 sends
each rank a fresh salt; each answers with a nonce and an HMAC-SHA256 proof over both, and rank 0
proves itself back, so neither an impostor rank nor a forged rank 0 gets past the handshake
without the key. Every frame, ack, credit and report then carries a tag keyed by a session key
derived from the key and the salt, checked before anything is decoded: a message forged or
replayed from another run is refused. Frames are authenticated, not encrypted.

A tag is Poly1305 (16 bytes) under a one-time key that HMAC-SHA256 derives from the session key
and the message's kind, numbers (link, microbatch, bits) and length, as ChaCha20-Poly1305
derives its one-time keys; each (kind, link, microbatch) is sent once per run, so no one-time key
tags two messages. Poly1305 runs at several GB/s, five times HMAC-SHA256's speed on a frame.

Without a key (allowed on a loopback address, or with ``--insecure``) the handshake still runs,
so that a rank with a key and a rank without refuse each other by name, and tags are empty.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import struct
from pathlib import Path

from cryptography.hazmat.primitives.poly1305 import Poly1305

KEY_ENV = "QUANTPIPE_RUN_KEY"
MIN_KEY_BYTES = 16
TAG_BYTES = 16  # Poly1305, on every message of a run
PROOF_BYTES = 32  # HMAC-SHA256, in the handshake
NONCE_BYTES = 32


class AuthError(ValueError):
    """A run key that cannot be used, or a peer that could not prove it holds the key."""


def new_run_key() -> str:
    """A fresh random key for one run (the launcher's, passed to its ranks in the environment)."""
    return secrets.token_hex(32)


def load_run_key(key_file: Path | None = None, environ: dict[str, str] | None = None
                 ) -> bytes | None:
    """The run key: `key_file`'s bytes, else ``QUANTPIPE_RUN_KEY``, else None. Surrounding
    whitespace is not part of the key (a trailing newline from an editor or ``openssl rand``)."""
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise AuthError(f"--key-file {key_file}: {error.strerror or error}") from None
        where = f"--key-file {key_file}"
    else:
        text = (os.environ if environ is None else environ).get(KEY_ENV, "")
        if not text:
            return None
        key, where = text.strip().encode(), KEY_ENV
    if len(key) < MIN_KEY_BYTES:
        raise AuthError(f"{where}: a run key needs at least {MIN_KEY_BYTES} bytes, got "
                        f"{len(key)} (make one with: openssl rand -hex 32)")
    return key


def is_loopback(address: str) -> bool:
    """True when `address` (a name or an IP) resolves to a loopback address."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(address)).is_loopback
    except (OSError, ValueError):
        return False


def require_key_or_insecure(key: bytes | None, master_addr: str, insecure: bool) -> None:
    """Refuse to run unauthenticated on a network address unless the user said so."""
    if key is None and not insecure and not is_loopback(master_addr):
        raise AuthError(
            f"no run key for a run over the network (--master-addr {master_addr}): give every "
            f"rank the same key in {KEY_ENV} or --key-file (make one with: openssl rand -hex "
            "32), or pass --insecure to let anyone who reaches rank 0 join"
        )


def _mac(key: bytes, label: bytes, *parts: int | bytes) -> bytes:
    mac = hmac.new(key, label, hashlib.sha256)
    for part in parts:
        mac.update(struct.pack("<q", part) if isinstance(part, int) else part)
    return mac.digest()


Part = int | bytes | bytearray | memoryview


class Session:
    """One run's tags: ``tag(label, *numbers, payload)`` and ``valid(tag, label, *numbers,
    payload)``; the payload (bytes-like, last) may be left out.

    The session key is derived from the run key and rank 0's salt, so tags of one run are
    worthless in another. Without a key, tags are empty and every tag is valid.
    """

    def __init__(self, key: bytes | None, salt: bytes) -> None:
        self.key = None if key is None else _mac(key, b"quantpipe session", salt)
        self.tag_bytes = 0 if key is None else TAG_BYTES

    def tag(self, label: bytes, *parts: Part) -> bytes:
        if self.key is None:
            return b""
        *numbers, payload = parts if parts and not isinstance(parts[-1], int) else (*parts, b"")
        one_time_key = _mac(self.key, label, *numbers, len(payload))
        return Poly1305.generate_tag(one_time_key, payload)

    def valid(self, tag: bytes, label: bytes, *parts: Part) -> bool:
        if self.key is None:
            return True
        return hmac.compare_digest(tag, self.tag(label, *parts))


class Handshake:
    """The messages of the challenge-response between rank 0 and rank ``r`` (pure functions of
    the key, so both sides and the tests compute the same thing).

    Each side also states the digest of the configuration it runs, so that ranks started with
    different config files refuse each other by name instead of failing on the first frame.
    """

    DIGEST_BYTES = 32
    HELLO_BYTES = 1 + NONCE_BYTES + DIGEST_BYTES  # keyed flag, salt, config digest
    ANSWER_BYTES = 1 + NONCE_BYTES + DIGEST_BYTES + PROOF_BYTES  # flag, nonce, digest, proof

    def __init__(self, key: bytes | None, config_digest: bytes = bytes(DIGEST_BYTES)) -> None:
        self.key, self.digest = key, config_digest

    def hello(self, salt: bytes) -> bytes:
        return bytes([self.key is not None]) + salt + self.digest

    def answer(self, rank: int, hello: bytes) -> bytes:
        """Rank `rank`'s answer to rank 0's hello: its nonce, its config and its proof."""
        stated = bytes([self.key is not None]) + secrets.token_bytes(NONCE_BYTES) + self.digest
        return stated + self._proof(b"quantpipe rank", rank, hello[1:], stated[1:])

    def check_answer(self, rank: int, hello: bytes, answer: bytes) -> str | None:
        """Why rank 0 refuses `answer`, or None."""
        if len(answer) != self.ANSWER_BYTES:
            return "did not answer the run-key challenge"
        refusal = _keyed_mismatch(self.key is not None, bool(answer[0]), rank)
        if refusal:
            return refusal
        stated, proof = answer[1:-PROOF_BYTES], answer[-PROOF_BYTES:]
        if not hmac.compare_digest(proof, self._proof(b"quantpipe rank", rank, hello[1:], stated)):
            return "could not prove it holds the run key (an impostor, or a different key)"
        if stated[NONCE_BYTES:] != self.digest:
            return "runs another configuration (its config file differs from stage 0's)"
        return None

    def proof_of_rank0(self, rank: int, hello: bytes, answer: bytes) -> bytes:
        return self._proof(b"quantpipe rank0", rank, answer[1:-PROOF_BYTES], hello[1:])

    def check_hello(self, rank: int, hello: bytes) -> str | None:
        """Why rank `rank` refuses rank 0's hello, or None."""
        if len(hello) != self.HELLO_BYTES:
            return "stage 0 sent no valid run-key challenge"
        refusal = _keyed_mismatch(bool(hello[0]), self.key is not None, rank)
        if refusal is None and hello[1 + NONCE_BYTES:] != self.digest:
            refusal = "stage 0 runs another configuration (its config file differs from this one)"
        return refusal

    def check_proof(self, rank: int, hello: bytes, answer: bytes, proof: bytes) -> str | None:
        """Why rank ``r`` refuses rank 0's proof, or None."""
        if hmac.compare_digest(proof, self.proof_of_rank0(rank, hello, answer)):
            return None
        return "stage 0 could not prove it holds the run key: not this run's rank 0"

    def _proof(self, label: bytes, *parts: int | bytes) -> bytes:
        return bytes(PROOF_BYTES) if self.key is None else _mac(self.key, label, *parts)


def _keyed_mismatch(rank0_keyed: bool, peer_keyed: bool, rank: int) -> str | None:
    if rank0_keyed == peer_keyed:
        return None
    with_key, without = (0, rank) if rank0_keyed else (rank, 0)
    return (f"stage {with_key} has a run key and stage {without} has none: give every rank the "
            f"same key ({KEY_ENV} or --key-file)")
