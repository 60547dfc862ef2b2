"""The job worker's broker, task and start-up: run by ``heimdex worker``
(``heimdex.entrypoints.worker_runner``, which also says how a worker stops).

Each worker process imports this module, so the broker is built here from the settings
(building it connects to nothing); each process builds its services at start-up, runs
the periodic sweep, and runs job ids through ``JobRunner.run``. With
``HEIMDEX_WORKER_METRICS_PORT`` set, process N (named ``worker-N``) serves its own
``/metrics`` on that port + N, since its jobs are counted nowhere else.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
from uuid import UUID

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from heimdex.application.sweeping import sweep_forever
from heimdex.bootstrap import (
    JOB_TASK_NAME,
    MetricsServer,
    Services,
    build,
    build_worker_broker,
    serve_worker_metrics,
)
from heimdex.domain.errors import DatabaseUnavailable
from heimdex.logs import configure_logging, get_logger
from heimdex.settings import load_settings

settings = load_settings()
broker = build_worker_broker(settings)
log = get_logger("heimdex.worker")
_DATABASE_WAIT_FIRST = 0.5
_DATABASE_WAIT_MAX = 10.0
_TASKS_STOP_SECONDS = 2.0


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def start_services(state: TaskiqState) -> None:
    configure_logging(settings.log.level, settings.log.format)
    services = build(settings, broker=broker)
    await start_when_database_answers(services)
    state.services = services
    state.sweeper = asyncio.create_task(
        sweep_forever(settings.jobs.sweep_interval_seconds, *services.sweeps())
    )
    state.metrics_server = _serve_metrics(services)
    # Workers never probe; their first job should not wait for the decode processes to start.
    state.warming = asyncio.create_task(services.warm_decoders(probing=False, thumbnails=True))
    log.info("worker_started", worker_id=services.job_runner.worker_id)


async def start_when_database_answers(services: Services) -> None:
    """A worker process (re)started while PostgreSQL is down waits for it rather than dying
    and being restarted in a loop; its messages stay unread in the stream meanwhile."""
    delay = _DATABASE_WAIT_FIRST
    while True:
        try:
            await services.startup(start_queue=False)  # taskiq has started the broker itself
            return
        except DatabaseUnavailable as exc:
            log.warning("waiting_for_database", error=exc.message, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DATABASE_WAIT_MAX)


def worker_index() -> int:
    """N of taskiq's ``worker-N`` process (restarts keep their N); 0 for any other process."""
    match = re.fullmatch(r"worker-(\d+)", multiprocessing.current_process().name)
    return int(match.group(1)) if match else 0


def _serve_metrics(services: Services) -> MetricsServer | None:
    if not settings.metrics.worker_port:
        return None
    port = settings.metrics.worker_port + worker_index()
    try:
        server = serve_worker_metrics(services, port)
    except OSError as exc:  # jobs matter more than their metrics: keep working, say it loudly
        log.error("worker_metrics_unavailable", host=settings.http.host, port=port, error=str(exc))
        return None
    log.info("worker_metrics_serving", host=settings.http.host, port=server.port)
    return server


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def stop_services(state: TaskiqState) -> None:
    services: Services | None = getattr(state, "services", None)
    if services is None:  # stopped while start-up waited for the database
        return
    tasks = {state.sweeper, state.warming}
    for task in tasks:
        task.cancel()
    # Bounded: a task whose cancellation a database call swallowed must not hold the stop.
    await asyncio.wait(tasks, timeout=_TASKS_STOP_SECONDS)
    if state.metrics_server is not None:
        state.metrics_server.close()
    await services.aclose()


def stop_requested() -> None:
    """Called the moment this worker process is asked to stop: from then on a failing run is
    handed back, not failed (``JobRunner.stopping``)."""
    services: Services | None = getattr(broker.state, "services", None)
    if services is not None:
        services.job_runner.stopping()


@broker.task(task_name=JOB_TASK_NAME)
async def run_job(job_id: str, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    services: Services = context.state.services
    try:
        await services.job_runner.run(UUID(job_id))
    except asyncio.CancelledError:
        # The worker is stopping and its grace ran out: the job recorded itself as queued again
        # and handed its id back (``job_handed_back``). This message is done with; ending
        # normally keeps taskiq from logging the cancellation as the task's error.
        return
