"""How a worker process reads the stop signals it gets (``heimdex worker``)."""

from __future__ import annotations

import signal

from heimdex.entrypoints.worker_runner import NOW_SIGNAL, StopRequests


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_signal_asks_to_stop_and_a_later_one_to_stop_now() -> None:
    clock = Clock()
    requests = StopRequests(clock)
    requests.received(signal.SIGTERM)
    assert (requests.stopping.is_set(), requests.now.is_set()) == (True, False)
    clock.now += 5
    requests.received(signal.SIGINT)
    assert requests.now.is_set()


def test_copies_of_the_first_signal_are_the_same_request() -> None:
    # Ctrl-C or a systemd stop reaches every process of the group, and the supervisor passes
    # the signal on as well: the worker gets it twice within moments.
    clock = Clock()
    requests = StopRequests(clock)
    requests.received(signal.SIGINT)
    clock.now += 0.05
    requests.received(signal.SIGTERM)
    assert requests.stopping.is_set()
    assert not requests.now.is_set()


def test_the_supervisors_second_signal_stops_now_whenever_it_comes() -> None:
    requests = StopRequests(Clock())
    requests.received(signal.SIGTERM)
    requests.received(NOW_SIGNAL)
    assert requests.now.is_set()


def test_the_first_request_is_announced_once_before_anything_waits_on_it() -> None:
    announced: list[bool] = []
    requests = StopRequests(Clock(), on_stop=lambda: announced.append(requests.stopping.is_set()))
    requests.received(signal.SIGTERM)
    requests.received(signal.SIGTERM)
    requests.received(NOW_SIGNAL)
    assert announced == [False]
