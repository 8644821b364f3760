"""The supervisor's restart policy: backoff that starts over, and a stop that ends the wait."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from csext.worker import supervisor as sup
from csext.worker.settings import Settings


def _supervisor(tmp_path: Path) -> sup.Supervisor:
    return sup.Supervisor(Settings(registry=tmp_path))


def test_backoff_grows_then_starts_over_after_a_stable_run(tmp_path: Path) -> None:
    s = _supervisor(tmp_path)
    quick = [s.restart_delay(uptime=1.0) for _ in range(8)]
    assert quick == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert s.restart_delay(uptime=sup.STABLE_UPTIME) == 0.5
    assert s.restart_delay(uptime=1.0) == 1.0


def test_a_stop_ends_a_restart_wait_without_a_new_child(tmp_path: Path) -> None:
    s = _supervisor(tmp_path)
    for _ in range(10):
        s.restart_delay(uptime=0.0)  # the next wait would be RESTART_BACKOFF_MAX (30 s)
    waiting = threading.Thread(target=s._restart_after_crash, args=(1, 1, 0.0), daemon=True)
    waiting.start()
    s._forward(signal.SIGTERM, None)
    waiting.join(timeout=sup.RESTART_BACKOFF_MAX / 2)
    assert not waiting.is_alive(), "the restart wait did not end on SIGTERM"
    assert s._children == {}, "a worker process was started after the stop"
