"""Real ``scrm worker`` processes for end-to-end tests, and killing them the hard way.

RQ's Worker forks a work horse per job and the horse calls ``setpgrp``: killing the worker's
process group does not reach it. ``WorkerProcesses.kill`` stops the worker's group first (it forks
no new horse while its children are looked up in /proc), SIGKILLs every descendant, then the group:
nobody gets a chance to clean up. Linux only (/proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.subprocess_env import ROOT

T = TypeVar("T")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, …]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as dead)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for(
    what: str,
    check: Callable[[], T],
    timeout: float = 60.0,
    every: float = 0.02,
    context: Callable[[], str] = str,
) -> T:
    """Poll ``check`` until it returns something truthy (returned); at the deadline an
    AssertionError naming ``what``, followed by ``context()``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{context()}")
        time.sleep(every)


class WorkerProcesses:
    """The ``scrm worker`` processes one test starts (each in its own session, output in a log
    file). ``close`` kills whatever is still alive, work horses included, and checks it is gone."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.killed: list[int] = []  # every pid SIGKILLed, descendants included

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"worker-{len(self.started)}.log"
        with path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", *args], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc.log_path = path  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes], tail: int = 4000) -> str:
        return proc.log_path.read_text(errors="replace")[-tail:]  # type: ignore[attr-defined]

    def burst(self, timeout: float = 120.0) -> str:
        """Run ``scrm worker --burst`` to the end; its output."""
        proc = self.start("--burst")
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise AssertionError(
                f"worker --burst still running after {timeout:.0f} s:\n{self.output(proc)}"
            ) from None
        assert proc.returncode == 0, self.output(proc)
        return self.output(proc)

    def wait_for(
        self, proc: subprocess.Popen[bytes], what: str, check: Callable[[], Any], timeout: float = 60.0
    ):
        """``wait_for`` that fails at once (with the worker's output) if the worker exits meanwhile."""

        def step() -> Any:
            value = check()
            if not value and proc.poll() is not None:
                raise AssertionError(
                    f"the worker exited ({proc.returncode}) before {what}:\n{self.output(proc)}"
                )
            return value

        return wait_for(what, step, timeout, context=lambda: self.output(proc))

    def kill(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL the worker, its scheduler and its work horse (see the module notes); the pids of
        the work horses that were running (descendants in a process group of their own)."""
        if proc.poll() is not None:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
        children = descendants(proc.pid)
        horses = [pid for pid in children if (stat := _stat(pid)) is not None and int(stat[2]) == pid]
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed += [proc.pid, *children]
        return horses

    def close(self) -> None:
        for proc in self.started:
            self.kill(proc)
        wait_for("every killed worker process to be gone", lambda: not any(map(alive, self.killed)), 10)
