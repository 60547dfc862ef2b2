"""A small pool of reused worker processes that decode untrusted media.

A decoder fed a hostile file can crash (corrupt HEVC crashing FFmpeg with SIGSEGV is a real
bug report), and in-process that takes the API or the job worker down with it. So decoding
runs in worker processes that are started once and reused (no exec per file), and a worker
that dies fails only the call it was running, with ``DecoderCrashed``.

Why not ``concurrent.futures.ProcessPoolExecutor``: one dead worker breaks the whole executor,
every call in flight fails with ``BrokenProcessPool``, the innocent ones too, and nothing says
which file killed it. Here each call has a worker to itself, so a death is pinned on the call
that caused it, the other calls carry on, and the empty slot gets a fresh process on the next
call. A call that outlives its timeout, or whose caller is cancelled, has its worker killed.

Workers are forked from a ``forkserver`` that has imported the decoding modules once (``spawn``
where there is no forkserver), never from the multi-threaded calling process itself.

Each worker runs under :class:`~heimdex.adapters.media.limits.DecodeLimits`, set by the worker
itself when it starts (memory, file size, priority) and before each call (a fresh CPU budget:
the worker is reused, and ``RLIMIT_CPU`` counts the process's whole life). A call that runs out
of memory (``MemoryError``) or writes too large a file (``EFBIG``) fails with its own code and
the worker carries on; one that runs out of CPU time is ended by the kernel (``SIGXCPU``) and
fails with ``decode_cpu_exceeded`` rather than ``decoder_crashed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.offload import run_blocking
from heimdex.domain.errors import (
    DecoderCrashed,
    DecodersBusy,
    HeimdexError,
    ThumbnailerUnavailable,
)

T = TypeVar("T")

# A worker asked to stop gets this long before it is killed; a new one this long to say ready.
_STOP_GRACE = 2.0
_START_TIMEOUT = 60.0
_READY = "ready"
# glibc's mallopt parameters (malloc.h), and what the workers set them to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_FREED_BYTES = 64 << 20
_MMAP_FROM_BYTES = 32 << 20


class _WorkerDied(Exception):
    """The worker process exited while it held a call."""


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def alive(self) -> bool:
        try:
            return self.process.is_alive()
        except ValueError:  # closed
            return False

    def exit_description(self) -> str:
        self.process.join(timeout=_STOP_GRACE)
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def killed_by(self, number: int) -> bool:
        """Whether the (exited) process was ended by signal ``number``."""
        with contextlib.suppress(ValueError):  # closed
            return self.process.exitcode == -number
        return False

    def kill(self) -> None:
        """Kill and reap: no zombie, no descriptor left open."""
        with contextlib.suppress(OSError, ValueError):  # gone already, or closed
            self.process.kill()
        self._reap()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=_STOP_GRACE)
        if self.process.is_alive():
            self.kill()
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(ValueError):  # closed already
            self.process.join(timeout=_STOP_GRACE)
            self.process.close()  # its sentinel descriptor
        self.conn.close()


def _serve(conn: Connection, limits: DecodeLimits) -> None:
    """A worker's life: run each ``(function, args)`` it is sent and send back the outcome."""
    # Ctrl-C or a systemd stop reaches the whole process group: stopping is the parent's to
    # handle (it lets running calls finish, then stops its workers with a message or SIGKILL).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    limits.apply_here()
    _keep_freed_memory()
    try:
        conn.send(_READY)
    except OSError:  # the parent gave up on this start (it is stopping): nothing to serve
        return
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        except Exception as exc:  # a task that does not unpickle here (a function not found)
            conn.send((False, _portable(exc)))
            continue
        if task is None:
            return
        func, args = task
        limits.renew_cpu_budget()
        try:
            outcome: tuple[bool, Any] = (True, func(*args))
        except Exception as exc:
            outcome = (False, _portable(_limit_hit(exc, limits)))
        conn.send(outcome)


def _keep_freed_memory() -> None:
    """Let glibc keep what FFmpeg frees for the next file instead of handing it back at once.

    Opening a file allocates its index and frame buffers (megabytes for a long 1080p MP4) and
    closing it frees them; by default the main heap is trimmed and large blocks are unmapped on
    every free, so the next file faults every page in again. With both thresholds raised, the
    worker reuses that memory (up to 64 MiB kept idle): probing a 600 s 1080p MP4 measured
    5.1 ms before, 4.1 ms after. ``RLIMIT_AS`` still bounds the total. Not glibc: no change.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES)
    mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES)


def _limit_hit(exc: Exception, limits: DecodeLimits) -> Exception:
    """The limit error an exception stands for (the allocator refused, a file grew too large),
    or the exception itself."""
    if isinstance(exc, HeimdexError):
        return exc
    if isinstance(exc, MemoryError) and limits.memory_bytes:
        return limits.memory_exceeded()
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG and limits.file_size_bytes:
        return limits.file_size_exceeded()
    return exc


def _portable(exc: Exception) -> Exception:
    """``exc`` if the parent can unpickle it, else a plain ``RuntimeError`` saying what it was
    (an exception with a custom constructor can pickle and still fail to unpickle)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


_Context = multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext


# What every pool in this process asked the forkserver to import (one server serves them all).
_PRELOADED: list[str] = []


def _context(preload: Sequence[str]) -> _Context:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Imported once in the server, so each fork starts with them loaded. Global to the
        # process (each call replaces the list: keep every pool's modules), and only honoured
        # before the server first starts.
        _PRELOADED.extend(name for name in preload if name not in _PRELOADED)
        context.set_forkserver_preload(list(_PRELOADED))
        return context
    return multiprocessing.get_context("spawn")


class DecodePool:
    """``size`` reused worker processes; ``await pool.run(func, *args)`` runs one call in one.

    ``func`` and its arguments must be picklable (a module-level function). A worker that dies
    during the call raises ``DecoderCrashed``. A call that is cancelled — by the caller's
    ``asyncio.timeout``, say — has its worker killed, so nothing keeps decoding for nobody.
    Usable from any event loop and thread; workers start when first needed (or with
    :meth:`start`) and stop with :meth:`close`.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        preload: Sequence[str] = (),
        limits: DecodeLimits | None = None,
        unavailable: type[HeimdexError] = ThumbnailerUnavailable,
        wait_seconds: float | None = None,
        busy: type[HeimdexError] = DecodersBusy,
    ) -> None:
        """``unavailable``: the error raised when no worker can run (the pool is closed, a
        worker cannot start) — the server's fault, named after what the pool serves.
        ``wait_seconds``: how long a call waits for a busy pool to free a worker before it
        fails with ``busy`` (a transient error: try again later) instead of queueing behind
        every call before it; ``None`` waits as long as it takes."""
        if size < 1:
            raise ValueError("a decode pool needs at least one worker")
        if wait_seconds is not None and wait_seconds <= 0:
            raise ValueError("a decode pool's wait must be positive (or None)")
        self.size = size
        self.wait_seconds = wait_seconds
        self._busy = busy
        self.limits = limits if limits is not None else DecodeLimits()
        self._unavailable = unavailable
        self._context = _context(preload)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._free = size  # slots with no process: the next caller starts one
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Worker | None]]]
        self._waiters = deque()
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any, call_seconds: float | None = None) -> T:
        """``func(*args)`` in a worker process; its exceptions are re-raised here.

        ``call_seconds`` bounds the call itself, not the wait for a free worker (which an
        ``asyncio.timeout`` around ``run`` would include): under load, or behind files that
        take their full time, a call must not be charged for its queue — a probe or a thumbnail
        run that times out is taken for a hostile file. A call past it has its worker killed
        and raises ``TimeoutError``. The wait has its own bound, the pool's ``wait_seconds``.
        """
        worker = await self._acquire()
        try:
            async with asyncio.timeout(call_seconds):
                ok, value = await self._call(worker, func, args)
        except BaseException:
            self._release(None)  # the worker is gone or killed: its slot is free again
            raise
        self._release(worker)
        if not ok:
            raise value
        result: T = value
        return result

    @property
    def started(self) -> int:
        """Worker processes started and not ended (idle or running a call)."""
        with self._lock:
            return self.size - self._free

    async def start(self) -> None:
        """Start every worker now rather than on first use (warm-up, health check)."""
        started: list[_Worker] = []
        try:
            while True:
                with self._lock:
                    if self._closed or self._free == 0:
                        break
                    self._free -= 1
                try:
                    started.append(await run_blocking(self._start))
                except BaseException:
                    self._release(None)
                    raise
        finally:
            for worker in started:
                self._release(worker)

    async def close(self) -> None:
        """Stop the idle workers; busy ones are killed when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            waiters, self._waiters = self._waiters, deque()
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_fail, waiter, self._unavailable)
        for worker in idle:
            await run_blocking(worker.stop)

    # -- slots ---------------------------------------------------------------------------------
    async def _acquire(self) -> _Worker:
        """A live worker for one call: an idle one, a new one in a free slot, or the next one
        released."""
        loop = asyncio.get_running_loop()
        with self._lock:  # decide under the lock, await outside it
            if self._closed:
                raise self._unavailable("the decode pool is closed")
            worker = self._take_idle()
            if worker is not None:
                return worker
            waiter: asyncio.Future[_Worker | None] | None = None
            if self._free > 0:
                self._free -= 1
            else:
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
        if waiter is None:
            return await self._started()
        try:
            async with asyncio.timeout(self.wait_seconds):
                try:
                    handed = await waiter
                except asyncio.CancelledError:
                    # Cancelled just after a worker (or a slot) was handed over: pass it on.
                    if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                        self._release(waiter.result())
                    raise
        except TimeoutError:
            raise self._busy(
                f"every decode worker stayed busy for {self.wait_seconds:g} s; try again later"
            ) from None
        if handed is not None and handed.alive:
            return handed
        if handed is not None:
            handed.kill()
        return await self._started()

    def _take_idle(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            worker.kill()  # died while idle (killed from outside): reap it, start another
            self._free += 1
        return None

    async def _started(self) -> _Worker:
        """A new worker in the slot the caller holds (given back if it cannot start)."""
        try:
            return await run_blocking(self._start)
        except BaseException:
            self._release(None)
            raise

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self.limits), name="heimdex-decode", daemon=True
        )
        try:
            process.start()
        except (OSError, AssertionError) as exc:  # out of processes; inside a daemonic process
            parent.close()
            raise self._unavailable(f"cannot start a decode worker: {exc}") from exc
        finally:
            child.close()
        worker = _Worker(process, parent)
        # Wait for it to say so: a worker that cannot start (its imports fail, the main module
        # is not import-safe) is the server's problem, not a decoder crash on some file.
        try:
            ready = parent.poll(_START_TIMEOUT) and parent.recv() == _READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            description = worker.exit_description() if not process.is_alive() else "no answer"
            worker.kill()
            raise self._unavailable(f"a decode worker did not start ({description})")
        return worker

    def _release(self, worker: _Worker | None) -> None:
        """Give a worker (or, with ``None``, an empty slot) to the next waiter, else keep it."""
        with self._lock:
            if self._closed:
                if worker is not None:
                    worker.kill()
                return
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                if waiter.done():
                    continue
                try:
                    loop.call_soon_threadsafe(self._deliver, waiter, worker)
                except RuntimeError:  # that waiter's loop is closed
                    continue
                return
            if worker is not None:
                self._idle.append(worker)
            else:
                self._free += 1

    def _deliver(self, waiter: asyncio.Future[_Worker | None], worker: _Worker | None) -> None:
        if waiter.done():  # cancelled meanwhile: pass it on
            self._release(worker)
        else:
            waiter.set_result(worker)

    # -- one call ------------------------------------------------------------------------------
    async def _call(
        self, worker: _Worker, func: Callable[..., Any], args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        try:
            try:
                worker.conn.send((func, args))
                await _readable(worker)
                # In a thread: a large answer (ten thumbnails) arrives in several reads.
                outcome: tuple[bool, Any] = await run_blocking(worker.conn.recv)
            except (EOFError, OSError) as exc:  # the pipe broke: the worker is gone
                raise _WorkerDied from exc
        except _WorkerDied:
            description = await run_blocking(worker.exit_description)  # waits for the exit
            out_of_cpu = worker.killed_by(signal.SIGXCPU)
            await run_blocking(worker.kill)
            if out_of_cpu:
                raise self.limits.cpu_exceeded() from None
            raise DecoderCrashed(f"the decoder crashed ({description})") from None
        except BaseException:  # cancelled (timed out): the work is not wanted, nor its worker
            worker.kill()
            raise
        return outcome


async def _readable(worker: _Worker) -> None:
    """Wait until the worker answers or exits (its pipe or its sentinel is readable)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    descriptors = (worker.conn.fileno(), worker.process.sentinel)
    for fd in descriptors:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        for fd in descriptors:
            loop.remove_reader(fd)
            # uvloop (libuv) leaves a descriptor it watched non-blocking, and a Connection
            # reads as if it blocks: a message in several pieces would fail with EAGAIN.
            os.set_blocking(fd, True)


def _fail(waiter: asyncio.Future[_Worker | None], unavailable: type[HeimdexError]) -> None:
    if not waiter.done():
        waiter.set_exception(unavailable("the decode pool is closed"))
