"""``heimdex worker``: job worker processes under a supervisor, and how they stop.

taskiq's own runner (``taskiq worker``) stops badly for a deployment: its supervisor sends the
stop on and returns without waiting, a worker waits for its running jobs without any bound,
and a worker killed meanwhile (the orchestrator's SIGKILL) leaves its job to its lease and its
message to Redis's idle timeout (ten minutes); a supervisor killed leaves its workers running,
orphans still taking jobs. Here the supervisor and each
worker process are ours, around taskiq's ``Receiver`` (which still parses, runs and
acknowledges each message), so that a stop is bounded at every step:

- SIGTERM or SIGINT to the supervisor is passed on to every worker process. A worker stops
  reading at once (the blocking read in flight is cancelled), lets its running jobs finish for
  up to ``HEIMDEX_WORKER_SHUTDOWN_GRACE_SECONDS``, then cancels those still running: each is
  recorded as queued again (``interrupted``) and its id is handed back to the queue, so another
  worker takes it at once. Whatever message it still holds unacknowledged goes back on the
  stream too. Then it closes its services and exits 0.
- A second signal ends the grace at once: the jobs are handed back now. A signal sent to the
  whole process group (Ctrl-C, a systemd stop) reaches a worker twice, from outside and from
  the supervisor, within moments: that counts once (``StopRequests``).
- The supervisor waits for its workers, each step of whose stop is bounded; past the grace and
  a margin it kills what is left (a stuck worker cannot hold a deployment's restart).
- A worker whose supervisor dies stops as if sent SIGTERM (Linux), never orphaned with a queue.
- A worker process that dies on its own (not stopping) is started again.

A worker's stop says what happened: ``worker_stopping`` (grace, jobs running), one
``job_handed_back`` per job it gave back, ``worker_stopped`` (seconds, jobs finished in the
grace, jobs and messages handed back); the supervisor logs ``workers_stopping`` and
``workers_stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from taskiq import AckableMessage
from taskiq.receiver import Receiver

from heimdex.logs import get_logger

log = get_logger("heimdex.worker")
T = TypeVar("T")

# The supervisor's "stop now" to its workers: a signal nothing else sends, so that a worker can
# tell it from a copy of the first stop (see StopRequests).
NOW_SIGNAL = signal.SIGUSR2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A stop signal this soon after the first is the same request: a Ctrl-C or a systemd stop
# reaches every process of the group, and the supervisor passes it on as well.
_SAME_REQUEST_SECONDS = 1.0
# Bounds of a worker's stop besides the grace; each is far above what the step takes.
_RECEIVER_STOP_SECONDS = 5.0  # the read in flight is cancelled: milliseconds
_HAND_BACK_SECONDS = 10.0  # a cancelled job writes its row and sends its id: one round trip each
_CLOSE_SECONDS = 10.0  # the decode pool, the database and Redis connections
# The supervisor kills a worker still running this long after the grace (the bounds above and
# some room for a loaded machine), or this long after a second signal.
_KILL_AFTER_GRACE_SECONDS = 30.0
_KILL_AFTER_NOW_SECONDS = 15.0
_RESTART_DELAY_SECONDS = 1.0
_POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1


class StopRequests:
    """The stop signals a worker process received: the first asks it to stop (``stopping``),
    a later one to stop now (``now``): no more grace for its running jobs."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_stop`` is called once, with the first request, before anything else runs."""
        self.stopping = asyncio.Event()
        self.now = asyncio.Event()
        self._clock = clock
        self._on_stop = on_stop
        self._first: float | None = None

    def received(self, signum: int) -> None:
        at = self._clock()
        if self._first is None:
            self._first = at
            self._on_stop()
            self.stopping.set()
            if signum == NOW_SIGNAL:
                self.now.set()
        elif signum == NOW_SIGNAL or at - self._first >= _SAME_REQUEST_SECONDS:
            self.now.set()


class _Broker(Protocol):
    async def hand_back(self) -> int: ...

    async def shutdown(self) -> None: ...


class _Receiver(Receiver):
    """taskiq's receiver, knowing which of its callbacks (one per message) are running, so a
    stop can wait for them and then cancel them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: set[asyncio.Task[Any]] = set()

    async def callback(self, message: bytes | AckableMessage, raise_err: bool = False) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)
        try:
            await super().callback(message, raise_err)
        finally:
            if task is not None:
                self.running.discard(task)


# -- a worker process ---------------------------------------------------------------------------
_early_signals: list[int] = []


def _note_early_signal(signum: int, _frame: object) -> None:
    _early_signals.append(signum)  # before the event loop handles signals itself


def run_worker_process(index: int, concurrency: int, grace_seconds: float) -> int:
    """A worker process's life (in the forked child): take jobs until asked to stop, then stop
    as the module says. Answers the exit status."""
    multiprocessing.current_process().name = f"worker-{index}"  # worker_index(), metrics port
    # Not asyncio.run: its clean-up waits for every task still left to end, and one that
    # swallows its cancellation (a database call turning it into an outage, say) would keep
    # the process alive for ever. The process ends right after this returns (os._exit).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(_work(concurrency, grace_seconds))


async def _work(concurrency: int, grace_seconds: float) -> int:
    from heimdex.entrypoints import worker as app  # builds the broker, registers task and events

    loop = asyncio.get_running_loop()
    requests = StopRequests(on_stop=app.stop_requested)
    for sig in (*STOP_SIGNALS, NOW_SIGNAL):
        loop.add_signal_handler(sig, requests.received, sig)
    for early in _early_signals:
        requests.received(early)
    broker = app.broker
    broker.is_worker_process = True  # taskiq runs the WORKER_STARTUP/SHUTDOWN handlers

    # Start-up waits for the database as long as it takes: a stop must not wait for it.
    if not await _until_stopped(broker.startup(), requests):
        with contextlib.suppress(Exception):  # what start-up began (the sweep, the pools)
            await _within(_CLOSE_SECONDS, broker.shutdown())
        log.info("worker_stopped", before="start-up finished")
        return 0
    receiver = _Receiver(
        broker,
        max_async_tasks=concurrency,
        max_prefetch=0,  # never hold a message this process cannot start now
        run_startup=False,
        wait_tasks_timeout=0,  # the running jobs are waited for below, within the grace
    )
    listening = asyncio.create_task(receiver.listen(requests.stopping))
    stopped = asyncio.create_task(requests.stopping.wait())
    await asyncio.wait({listening, stopped}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if listening.done() and not requests.stopping.is_set():
        log.error("worker_receiver_failed", error=repr(listening.exception()))
        status = 1
        requests.received(signal.SIGTERM)
    stopped.cancel()
    await _stop(broker, receiver, listening, requests, grace_seconds)
    return status


async def _until_stopped(operation: Awaitable[None], requests: StopRequests) -> bool:
    """Run ``operation`` unless a stop comes first (then it is cancelled): answers whether it
    ran to the end."""
    task = asyncio.ensure_future(operation)
    stopped = asyncio.create_task(requests.stopping.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        task.result()  # a failed start-up is the process's failure
        return True
    task.cancel()
    await asyncio.wait({task}, timeout=_CLOSE_SECONDS)
    return False


async def _within(seconds: float, operation: Awaitable[T]) -> T:
    """``operation``'s result, or ``TimeoutError`` after ``seconds``. Unlike ``wait_for``, a
    late operation is cancelled and not waited for: one that ignores its cancellation must not
    hold the stop."""
    task = asyncio.ensure_future(operation)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        raise TimeoutError(f"not done within {seconds} s")
    return task.result()


async def _stop(
    broker: _Broker,
    receiver: _Receiver,
    listening: asyncio.Task[None],
    requests: StopRequests,
    grace_seconds: float,
) -> None:
    began = time.monotonic()
    running_at_stop = len(receiver.running)
    log.info("worker_stopping", grace_seconds=grace_seconds, jobs_running=running_at_stop)
    # No new message: the receiver cancels its read in flight (a message that arrived with the
    # cancellation is started like the others, or left unacknowledged and handed back below).
    await asyncio.wait({listening}, timeout=_RECEIVER_STOP_SECONDS)
    if not listening.done():
        log.warning("worker_receiver_not_stopped", seconds=_RECEIVER_STOP_SECONDS)
        listening.cancel()

    # The running jobs get the grace to finish, unless a second signal ends it.
    deadline = time.monotonic() + grace_seconds
    now = asyncio.create_task(requests.now.wait())
    while receiver.running and not requests.now.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.wait(
            {*receiver.running, now}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
    now.cancel()

    # Past it, each job is cancelled: it records itself as queued again and hands its id back.
    unfinished = set(receiver.running)
    if unfinished:
        log.warning(
            "worker_handing_back_jobs",
            jobs=len(unfinished),
            reason="second stop signal" if requests.now.is_set() else "grace period over",
        )
        for task in unfinished:
            task.cancel()
        await asyncio.wait(unfinished, timeout=_HAND_BACK_SECONDS)
    messages = 0
    try:
        messages = await _within(_HAND_BACK_SECONDS, broker.hand_back())
    except Exception as exc:  # Redis gone or too slow: their claims lapse, another takes them
        log.warning("worker_messages_not_handed_back", error=repr(exc))
    try:
        await _within(_CLOSE_SECONDS, broker.shutdown())  # WORKER_SHUTDOWN: the services
    except Exception as exc:  # the process ends anyway; its connections with it
        log.warning("worker_services_not_closed", error=repr(exc))
    log.info(
        "worker_stopped",
        seconds=round(time.monotonic() - began, 3),
        jobs_finished=running_at_stop - len(unfinished),
        jobs_handed_back=len(unfinished),
        messages_handed_back=messages,
    )


def _die_with_parent(parent: int) -> None:
    """Be sent SIGTERM when the supervisor dies (Linux), so no worker outlives it unseen."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was in place
        _early_signals.append(signal.SIGTERM)


# -- the supervisor -----------------------------------------------------------------------------
def run_workers(processes: int, concurrency: int, grace_seconds: float) -> int:
    """Run ``processes`` worker processes until SIGTERM or SIGINT, and stop them as the module
    says. Answers the exit status: 0 when every worker stopped by itself."""
    signals: list[int] = []
    handled = (*STOP_SIGNALS, NOW_SIGNAL)

    def note(signum: int, _frame: object) -> None:
        signals.append(signum)  # acted on by the loop below, not inside the handler

    previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    children: dict[int, int] = {}  # pid → index
    parent = os.getpid()

    def spawn(index: int) -> None:
        # Blocked across the fork: the child must not run the supervisor's handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in handled:
                    signal.signal(sig, _note_early_signal)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
                _die_with_parent(parent)
                code = run_worker_process(index, concurrency, grace_seconds)
            except BaseException:
                log.exception("worker_process_failed", worker=index)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(code)  # never the supervisor's code, nor multiprocessing's exit joins
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        children[pid] = index
        log.info("worker_process_started", worker=index, pid=pid)

    for index in range(processes):
        spawn(index)
    stopping_since: float | None = None
    kill_at = float("inf")
    status = 0
    restarts: dict[int, float] = {}  # index → when to start it again
    try:
        while children or (stopping_since is None and restarts):
            while signals:
                signum = signals.pop(0)
                if stopping_since is None:
                    stopping_since = time.monotonic()
                    kill_at = stopping_since + grace_seconds + _KILL_AFTER_GRACE_SECONDS
                    restarts.clear()
                    log.info(
                        "workers_stopping",
                        signal=signal.Signals(signum).name,
                        grace_seconds=grace_seconds,
                        processes=len(children),
                    )
                    _send(children, signal.SIGTERM)
                else:
                    kill_at = min(kill_at, time.monotonic() + _KILL_AFTER_NOW_SECONDS)
                    log.warning("workers_stopping_now", signal=signal.Signals(signum).name)
                    _send(children, NOW_SIGNAL)
            status = _reap(children, restarts, stopping=stopping_since is not None) or status
            if time.monotonic() >= kill_at and children:
                log.error("worker_processes_killed", pids=sorted(children))
                _send(children, signal.SIGKILL)
                kill_at = float("inf")
                status = 1
            for index, when in list(restarts.items()):
                if time.monotonic() >= when:
                    del restarts[index]
                    spawn(index)
            time.sleep(_POLL_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping_since is not None:
        log.info("workers_stopped", seconds=round(time.monotonic() - stopping_since, 3))
    return status


def _send(children: dict[int, int], sig: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(children: dict[int, int], restarts: dict[int, float], *, stopping: bool) -> int:
    """Collect the worker processes that exited; one that was not asked to is started again
    after a moment. Answers 1 when one failed, else 0."""
    status = 0
    while children:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            break
        if pid == 0:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            (log.info if code == 0 else log.error)(
                "worker_process_exited", worker=index, pid=pid, exit_code=code
            )
            status = status or (0 if code == 0 else 1)
        else:
            log.error("worker_process_died", worker=index, pid=pid, exit_code=code)
            restarts[index] = time.monotonic() + _RESTART_DELAY_SECONDS
    return status
