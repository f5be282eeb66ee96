"""Driving a RunnerSession in tests: one cell's outcome, events in arrival order."""

from __future__ import annotations

import time

from agentkernel.runner_client import RunnerSession

TIMEOUT = 30  # seconds any single request may take before a test fails instead of hanging


class Cell:
    """The outcome of one execute: the ``done`` fields and the events in arrival order."""

    def __init__(self, session: RunnerSession, code: str, **kwargs) -> None:
        self.events: list[dict] = []
        self.times: list[float] = []
        kwargs.setdefault("timeout", TIMEOUT)
        self.reply = session.execute(code, on_event=self._record, **kwargs)
        self.done_at = time.monotonic()

    def _record(self, frame: dict) -> None:
        self.events.append(frame)
        self.times.append(time.monotonic())

    @property
    def status(self) -> str:
        return self.reply["status"]

    def of(self, kind: str) -> list[dict]:
        return [event for event in self.events if event["type"] == kind]

    def text(self, name: str = "stdout") -> str:
        return "".join(e["text"] for e in self.of("stream") if e["name"] == name)

    @property
    def error(self) -> dict:
        (error,) = self.of("error")
        return error

    @property
    def result(self) -> dict:
        (result,) = self.of("result")
        return result
