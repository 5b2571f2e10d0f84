"""A failure inside an output capture's reader thread never stops the capture, and is reported: at once
where that is safe, and in the log once fd 1/2 are restored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dlnest_ray.runtime.output import LineCapture, OutputTee

LOGGER = "dlnest_ray.runtime.output"


def test_a_broken_console_is_logged_and_the_file_keeps_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(data: bytes) -> None:
        raise BrokenPipeError("console gone")

    target = tmp_path / "out.txt"
    with caplog.at_level(logging.WARNING, logger=LOGGER), OutputTee(target, console=broken):
        print("one", flush=True)
        print("two", flush=True)
    text = target.read_text()
    assert "one\n" in text and "two\n" in text
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("the console failed 1 time" in m and "BrokenPipeError: console gone" in m for m in messages)


def test_a_failing_consumer_is_reported_and_the_capture_goes_on(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []
    calls = [0]

    def on_lines(lines: list[str]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("consumer broke")
        got.extend(lines)

    capture = LineCapture(on_lines, tee=True).start()
    try:
        print("first", flush=True)
        assert capture.sync()
        print("second", flush=True)
        assert capture.sync()
    finally:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            capture.stop()
    assert got == ["second"]
    out = capfd.readouterr().out
    # said at once on the original stdout, not through the pipe
    assert "output capture: the consumer failed: RuntimeError: consumer broke" in out
    assert "first" in out and "second" in out  # the tee went on
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("consumer of the lines failed 1 time" in m for m in messages)
