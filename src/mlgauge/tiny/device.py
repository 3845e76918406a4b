"""A device under test on the host: serves the MLPerf Tiny DUT protocol for any inference callable.

It answers the commands of ``internally_implemented.cpp`` with the firmware's reply strings, so the
runner talks to it exactly as to a board: over a pseudo-terminal (``url`` is the slave's path, a
serial port to pyserial) or over TCP on 127.0.0.1 (``url`` is ``socket://127.0.0.1:<port>``).
Timing is the firmware's: ``infer N W`` prints ``m-lap-us`` from a µs clock (time.perf_counter_ns)
just before and just after the N timed inferences on the loaded buffer; the W warm-ups and the
buffer-to-bytes copy (th_load_tensor) stay outside.

Departures from the firmware, where it would silently corrupt memory instead: a command over 80
characters, ``db`` data before ``db load`` or past its size, ``db load`` of a size the model does not
take, and ``infer`` before the input is complete each answer an ``e-[...]`` line.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Sequence

from mlgauge.errors import UsageError, choice_error
from mlgauge.tiny.protocol import CMD_MAX_CHARS, FW_VERSION, INIT_DONE, MAX_DB_INPUT_SIZE, MODEL_IDS, READY

# bytes -> outputs; or a serve.ServedModel, whose prepare stage runs once per loaded input
InferFn = Callable[[bytes], Sequence[float]]
_POLL_S = 0.1  # how often a blocked write re-checks for stop()


def _now_us() -> int:
    return time.perf_counter_ns() // 1000


def _atoi(text: str | None) -> int:
    """C atoi: the leading integer, 0 when there is none (the firmware's argument parsing)."""
    digits = ""
    for i, c in enumerate((text or "").strip()):
        if c.isdigit() or (i == 0 and c in "+-"):
            digits += c
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


class DutCore:
    """The firmware's command parser and state for one boot; ``write`` sends reply bytes as they come."""

    def __init__(
        self,
        infer: InferFn,
        model_id: str,
        input_size: int,
        vendor: str,
        decimals: int,
        write: Callable[[bytes], None],
    ) -> None:
        self._infer, self._model, self._size = infer, model_id, input_size
        self._vendor, self._decimals, self._write = vendor, decimals, write
        self._pending = bytearray()  # the command being received, up to the '%'
        self._buffer = bytearray()  # gp_buff: the db-loaded input
        self._expected = 0  # g_buff_size
        self._results: list[float] | None = None
        self._handlers: dict[str, Callable[[list[str]], None]] = {
            "name": lambda _: self._emit(f"m-name-dut-[{self._vendor}]"),
            "timestamp": lambda _: self._emit(f"m-lap-us-{_now_us()}"),
            "profile": lambda _: self._emit(f"m-profile-[{FW_VERSION}]", f"m-model-[{self._model}]"),
            "help": lambda _: self._emit(FW_VERSION, "name timestamp profile db infer results"),
            "db": self._db,
            "infer": self._infer_command,
            "results": self._results_command,
        }

    def boot(self) -> None:
        """What th_timestamp_initialize and ee_benchmark_initialize print at power-up."""
        self._emit("m-timestamp-mode-performance", f"m-lap-us-{_now_us()}", INIT_DONE, READY)

    def feed(self, data: bytes) -> None:
        for byte in data:
            if byte == ord("%"):
                command = self._pending.decode("ascii", errors="replace")
                self._pending.clear()
                self._dispatch(command)
            else:
                self._pending.append(byte)

    def _emit(self, *lines: str) -> None:
        self._write("".join(f"{line}\r\n" for line in lines).encode("ascii", errors="replace"))

    def _dispatch(self, command: str) -> None:
        words = [w for w in command.split(" ") if w]  # strtok: runs of spaces are one delimiter
        head, args = (words[0], words[1:]) if words else ("", [])
        if len(command) > CMD_MAX_CHARS:
            self._emit(f"e-[Command longer than {CMD_MAX_CHARS} characters]")
        elif head in self._handlers:
            self._handlers[head](args)
        else:
            self._emit(f"e-[Unknown command: {head if head.isprintable() else repr(head)}]")
        self._emit(READY)

    def _results_command(self, _: list[str]) -> None:
        self._emit(self._results_line() if self._results is not None else "e-[No inference has run yet]")

    def _db(self, args: list[str]) -> None:
        if not args:
            self._emit("e-[Command 'db' requires a subcommand]")
        elif args[0] == "load":
            self._db_load(args[1] if len(args) > 1 else None)
        elif args[0] == "print":
            data = bytes(self._buffer)
            for i in range(0, len(data), 8):
                self._emit("m-buffer-" + "-".join(f"{b:02x}" for b in data[i : i + 8]))
        else:
            self._db_data(args[0])

    def _db_load(self, arg: str | None) -> None:
        size = _atoi(arg)
        if arg is None:
            self._emit("e-[Command 'db load' requires the # of bytes]")
        elif size <= 0:
            self._emit("e-[Command 'db load' must be >0 bytes]")
        elif size > MAX_DB_INPUT_SIZE:
            self._emit(f"Supplied buffer size {size} exceeds maximum of {MAX_DB_INPUT_SIZE}")
        elif size != self._size:
            self._emit(f"e-[Model {self._model} takes {self._size} bytes, not {size}]")
        else:
            self._expected = size
            self._buffer.clear()
            self._emit(f"m-[Expecting {size} bytes]")

    def _db_data(self, digits: str) -> None:
        if len(digits) % 2:
            self._emit("e-[Insufficent number of hex digits]")  # sic, the firmware's spelling
            return
        if self._expected == 0 or len(self._buffer) >= self._expected:
            self._emit("e-[No 'db load' is waiting for data]")
            return
        for i in range(0, len(digits), 2):
            pair = digits[i : i + 2]
            try:
                self._buffer.append(int(pair, 16))
            except ValueError:
                self._emit(f"e-[Invalid hex digit '{pair}']")
                return
            if len(self._buffer) == self._expected:
                self._emit("m-load-done")
                return  # the firmware disregards digits past the declared size

    def _infer_command(self, args: list[str]) -> None:
        inferences = _atoi(args[0]) if args else 1
        warmups = _atoi(args[1]) if len(args) > 1 else 10  # the firmware's default warm-up count
        if inferences <= 0:
            self._emit("e-[Inference iterations must be >0]")
        elif warmups < 0:
            self._emit("e-[Inference warmup must be >=0]")
        elif self._expected == 0 or len(self._buffer) != self._expected:
            self._emit(f"e-[Input not loaded: have {len(self._buffer)} of {self._size} bytes]")
        else:
            try:
                self._timed_loop(inferences, warmups)
            except Exception as err:  # a backend failure is the device's error reply, not a crash
                self._emit(f"e-[Inference failed: {type(err).__name__}: {err}]".replace("\n", " "))

    def _timed_loop(self, inferences: int, warmups: int) -> None:
        data = bytes(self._buffer)
        # th_load_tensor, untimed: a two-stage served model (serve.ServedModel) turns the bytes into
        # the model's input once, so only th_infer is in the laps, as on a board
        staged = hasattr(self._infer, "prepare") and hasattr(self._infer, "infer")
        run = self._infer.infer if staged else self._infer  # type: ignore[attr-defined]
        if staged:
            data = self._infer.prepare(data)  # type: ignore[attr-defined]
        self._emit(f"m-warmup-start-{warmups}")
        for _ in range(warmups):
            run(data)
        self._emit("m-warmup-done", f"m-infer-start-{inferences}")
        start = _now_us()
        for _ in range(inferences):
            out = run(data)
        end = _now_us()
        self._results = [float(v) for v in out]
        self._emit(f"m-lap-us-{start}", f"m-lap-us-{end}", "m-infer-done", self._results_line())

    def _results_line(self) -> str:
        values = ",".join(f"{v:.{self._decimals}f}" for v in self._results or [])
        return f"m-results-[{values}]"


class HostDevice:
    """Base for the transports: validates the settings, runs ``_serve`` in a thread, stops cleanly."""

    def __init__(
        self, infer: InferFn, model_id: str, input_size: int, *, vendor: str = "mlgauge", decimals: int = 3
    ) -> None:
        if model_id not in MODEL_IDS:
            raise choice_error("Tiny model id", model_id, MODEL_IDS)
        if not 1 <= input_size <= MAX_DB_INPUT_SIZE:
            raise UsageError(f"input size {input_size} bytes", hint=f"Use 1 to {MAX_DB_INPUT_SIZE} bytes")
        if not vendor.isprintable() or "]" in vendor:
            raise UsageError(f"vendor name {vendor!r}", hint="Use printable text without ']'")
        self._settings = (infer, model_id, input_size, vendor, decimals)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self.url = ""

    def _core(self, write: Callable[[bytes], None]) -> DutCore:
        return DutCore(*self._settings, write=write)

    def start(self) -> str:
        """Start serving; returns the URL to give the runner."""
        self._stop.clear()
        self._wake_r, self._wake_w = os.pipe()
        self.url = self._open()
        self._thread = threading.Thread(target=self._serve, name=f"tiny-dut-{self.url}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving; a command in progress (a long ``infer``) is waited for, up to 10 s."""
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        self._thread = None
        self._close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> HostDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> str:
        raise NotImplementedError

    def _serve(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _wait_readable(self, fd: int) -> bool:
        """Block until ``fd`` has data; False once stop() was called."""
        ready, _, _ = select.select([fd, self._wake_r], [], [])
        return not self._stop.is_set() and fd in ready

    def _write_all(self, fd: int, send: Callable[[bytes], int], data: bytes) -> None:
        """Write everything unless stop() comes first (a host that stopped reading must not hang stop)."""
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [fd], [], _POLL_S)
            if writable:
                try:
                    view = view[send(view) :]
                except BlockingIOError:
                    continue


class PtyDevice(HostDevice):
    """Served on a pseudo-terminal: ``url`` is the slave's path (/dev/pts/N), opened like a serial port."""

    def _open(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass as on a UART
        os.set_blocking(self._master, False)
        return os.ttyname(self._slave)  # the slave stays open here so the host may close and reopen it

    def _serve(self) -> None:
        core = self._core(
            functools.partial(self._write_all, self._master, functools.partial(os.write, self._master))
        )
        core.boot()
        while self._wait_readable(self._master):
            try:
                data = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            core.feed(data)

    def _close(self) -> None:
        os.close(self._master)
        os.close(self._slave)


class TcpDevice(HostDevice):
    """Served on 127.0.0.1: ``url`` is ``socket://127.0.0.1:<port>``. One host at a time; each
    connection is a fresh boot (banner, empty buffer), like a board reset when its port opens."""

    def _open(self) -> str:
        self._listener = socket.create_server(("127.0.0.1", 0))
        return f"socket://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while self._wait_readable(self._listener.fileno()):
            conn, _ = self._listener.accept()
            with conn:
                conn.setblocking(False)
                # a reply goes out line by line; Nagle would hold each next line for the host's delayed ACK
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        core = self._core(functools.partial(self._write_all, conn.fileno(), conn.send))
        try:
            core.boot()
            while self._wait_readable(conn.fileno()):
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                if not data:
                    return  # the host closed: wait for the next one
                core.feed(data)
        except OSError:
            return  # reset by the host

    def _close(self) -> None:
        self._listener.close()
