"""A seeded, bounded TCP fault proxy for the serial link: it sits on 127.0.0.1 between a client
(the host's :class:`~microt_deploy.link.device.Device`, through ``socket://``) and the device (the
emulator's loopback socket, or any pyserial port such as the host build's pty) and, per direction,
drops, flips (one random bit), duplicates and delays bytes at set rates, or cuts the connection
after a number of bytes. It counts what it did.

Usable from tests and plain scripts::

    with launch(board, image) as port, FaultProxy(port, to_device=Faults(drop=1e-3), seed=1) as proxy:
        device = Device(proxy.open(), timeout=1.0)
        ...
    print(proxy.stats())

It stops by itself: every socket operation has a short timeout, both pump threads watch a stop
event and a life limit (``limit_s``), and :meth:`FaultProxy.close` joins them with a timeout.
The faults are decided per byte from a per-direction ``numpy`` generator seeded with ``seed``:
the n-th byte of a direction meets the same fate in every run, however the bytes are chunked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import serial

POLL_S = 0.05  # how long any blocking call may wait before the stop flag is checked again
DIRECTIONS = ("to_device", "to_host")


@dataclass(frozen=True)
class Faults:
    """What to do to the bytes of one direction. Rates are per byte, in ``[0, 1]``; a dropped byte
    meets no other fault; a kept byte may be flipped (one random bit), then duplicated, and may be
    held back ``delay_ms`` before it (and everything behind it) is sent. ``cut_after``: after that
    many bytes of this direction have been forwarded the proxy closes the connection. The rates
    apply from byte ``start_after`` of the direction on (a link that turns bad mid-session)."""

    drop: float = 0.0
    flip: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_ms: float = 0.0
    cut_after: int | None = None
    start_after: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "flip", "duplicate", "delay"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {name}={rate} is outside [0, 1]")
        if self.delay_ms < 0 or self.start_after < 0 or (self.cut_after is not None and self.cut_after < 0):
            raise ValueError("delay_ms, cut_after and start_after must not be negative")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.flip or self.duplicate or (self.delay and self.delay_ms))


@dataclass
class Counts:
    """What the proxy did to one direction."""

    bytes_in: int = 0  # read from the source
    bytes_out: int = 0  # written to the destination
    dropped: int = 0
    flipped: int = 0
    duplicated: int = 0
    delayed: int = 0
    cut: bool = False


class _SocketEnd:
    """One side of the proxy: a connected socket."""

    def __init__(self, sock: socket.socket, owned: bool) -> None:
        self.sock = sock
        self.owned = owned
        sock.settimeout(POLL_S)

    def recv(self) -> bytes | None:
        """Some bytes; b"" when nothing came within POLL_S; None at end of stream."""
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return b""
        except OSError:
            return None
        return data if data else None

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.owned:
            self.shutdown()
            with contextlib.suppress(OSError):
                self.sock.close()


class _PortEnd:
    """One side of the proxy: a pyserial port (the emulator's socket:// port, a pty, a board)."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.timeout = getattr(port, "timeout", None)
        with contextlib.suppress(Exception):
            port.timeout = POLL_S

    def recv(self) -> bytes | None:
        try:
            waiting = self.port.in_waiting
            return self.port.read(max(1, min(int(waiting or 1), 4096)))
        except (serial.SerialException, OSError, TypeError, ValueError):
            return None

    def send(self, data: bytes) -> bool:
        try:
            with self.lock:
                self.port.write(data)
        except (serial.SerialException, OSError, TypeError, ValueError):
            return False
        return True

    def shutdown(self) -> None:
        pass  # the port belongs to the caller (launch() closes it)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.port.timeout = self.timeout


class FaultProxy:
    """A fault-injecting TCP proxy for one client connection.

    ``upstream`` is the device's side: a ``(host, port)`` address (connected in :meth:`start`,
    retried for ``connect_timeout_s`` while e.g. QEMU comes up), a connected ``socket.socket``, or a
    pyserial port (anything with ``read``/``write``/``in_waiting``); the last two stay the caller's
    and are not closed. ``to_device`` / ``to_host`` are the :class:`Faults` of each direction.
    The proxy listens on ``127.0.0.1`` (:attr:`url` is a ``socket://`` URL for pyserial /
    ``--port``), accepts one client within ``accept_timeout_s`` and forwards until either side
    closes, a cut, :meth:`close`, or ``limit_s`` seconds after :meth:`start`.
    """

    def __init__(self, upstream: Any, to_device: Faults | None = None, to_host: Faults | None = None, *,
                 seed: int = 0, limit_s: float = 600.0, accept_timeout_s: float = 30.0,
                 connect_timeout_s: float = 20.0) -> None:
        self.upstream = upstream
        self.faults = {"to_device": to_device or Faults(), "to_host": to_host or Faults()}
        self.seed = seed
        self.limit_s = limit_s
        self.accept_timeout_s = accept_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.counts = {d: Counts() for d in DIRECTIONS}
        self.cut = False
        self.error: str | None = None  # why forwarding ended early (None: closed normally)
        self._rng = {d: np.random.default_rng([seed, i]) for i, d in enumerate(DIRECTIONS)}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._client: _SocketEnd | None = None
        self._device: _SocketEnd | _PortEnd | None = None
        self._deadline = 0.0
        self.address: tuple[str, int] | None = None

    # ------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        if self.address is None:
            raise RuntimeError("the proxy is not started")
        return f"socket://{self.address[0]}:{self.address[1]}"

    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._deadline = time.monotonic() + self.limit_s
        self._device = self._open_upstream()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(POLL_S)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        thread = threading.Thread(target=self._serve, name="faultproxy-to-device", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def open(self, timeout: float = 0.1) -> serial.Serial:
        """Start (if needed) and connect a pyserial port to the proxy; the caller closes it."""
        self.start()
        return serial.serial_for_url(self.url, timeout=timeout)

    def close(self, join_s: float = 2.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(join_s)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        for end in (self._client, self._device):
            if end is not None:
                end.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stats(self) -> dict[str, Any]:
        """Plain numbers: per direction what came in, went out and what was done; cut or not."""
        return {**{d: asdict(c) for d, c in self.counts.items()}, "cut": self.cut, "error": self.error}

    # ------------------------------------------------------------ internals
    def _open_upstream(self) -> _SocketEnd | _PortEnd:
        up = self.upstream
        if isinstance(up, socket.socket):
            return _SocketEnd(up, owned=False)
        if isinstance(up, tuple):
            end = time.monotonic() + self.connect_timeout_s
            while True:
                try:
                    sock = socket.create_connection(up, timeout=1.0)
                except OSError as err:
                    if time.monotonic() > end:
                        raise ConnectionError(f"fault proxy: cannot connect to {up[0]}:{up[1]} ({err})") from None
                    time.sleep(POLL_S)
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _SocketEnd(sock, owned=True)
        if hasattr(up, "read") and hasattr(up, "write"):
            return _PortEnd(up)
        raise TypeError(f"fault proxy: cannot use {type(up).__name__} as the device side")

    def _serve(self) -> None:
        assert self._listener is not None
        end = min(self._deadline, time.monotonic() + self.accept_timeout_s)
        conn = None
        while conn is None and not self._stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
        with contextlib.suppress(OSError):
            self._listener.close()
        if conn is None:
            self.error = self.error or "no client connected"
            self._stop.set()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = _SocketEnd(conn, owned=True)
        back = threading.Thread(target=self._pump, args=("to_host", self._device, self._client),
                                name="faultproxy-to-host", daemon=True)
        self._threads.append(back)
        back.start()
        self._pump("to_device", self._client, self._device)

    def _pump(self, direction: str, src: Any, dst: Any) -> None:
        faults, counts, rng = self.faults[direction], self.counts[direction], self._rng[direction]
        while not self._stop.is_set():
            if time.monotonic() > self._deadline:
                self._finish(f"life limit of {self.limit_s:g} s reached")
                return
            data = src.recv()
            if data is None:
                self._finish(None if direction == "to_device" else "the device closed the connection")
                return
            if not data:
                continue
            cut = False
            if faults.cut_after is not None and counts.bytes_in + len(data) >= faults.cut_after:
                data = data[: max(0, faults.cut_after - counts.bytes_in)]
                cut = True
            if data and not self._forward(data, faults, counts, rng, dst):
                self._finish(f"writing {direction} failed")
                return
            if cut:
                counts.cut = True
                self.cut = True
                self._finish(f"cut {direction} after {faults.cut_after} bytes")
                return

    def _forward(self, data: bytes, faults: Faults, counts: Counts, rng: np.random.Generator, dst: Any) -> bool:
        position = counts.bytes_in
        counts.bytes_in += len(data)
        if not faults.active:
            counts.bytes_out += len(data)
            return dst.send(data)
        # Five draws per byte, always: the n-th byte's fate does not depend on the chunking.
        draws = rng.random((len(data), 5)).tolist()
        out = bytearray()
        for byte, (u_drop, u_flip, u_dup, u_delay, u_bit) in zip(data, draws, strict=True):
            position += 1
            if position <= faults.start_after:
                out.append(byte)
                continue
            if u_drop < faults.drop:
                counts.dropped += 1
                continue
            if u_flip < faults.flip:
                byte ^= 1 << int(u_bit * 8)
                counts.flipped += 1
            if faults.delay_ms and u_delay < faults.delay:
                counts.delayed += 1
                if out and not dst.send(bytes(out)):
                    return False
                counts.bytes_out += len(out)
                out.clear()
                if self._stop.wait(faults.delay_ms / 1000.0):
                    return True
            out.append(byte)
            if u_dup < faults.duplicate:
                out.append(byte)
                counts.duplicated += 1
        counts.bytes_out += len(out)
        return dst.send(bytes(out)) if out else True

    def _finish(self, why: str | None) -> None:
        if why is not None and self.error is None:
            self.error = why
        self._stop.set()
        # Both ends see the close at once (the client's reads fail, a device socket sees EOF).
        for end in (self._client, self._device):
            if end is not None and (end is self._client or getattr(end, "owned", False)):
                end.shutdown()
