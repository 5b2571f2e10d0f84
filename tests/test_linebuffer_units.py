"""LineBuffer (linebuffer.py): appended and preloaded lines are bounded the same way."""

from __future__ import annotations

from pathlib import Path

from dlnest_ray.linebuffer import LineBuffer


def test_append_drops_the_oldest_and_moves_start_on() -> None:
    buf = LineBuffer(max_lines=3, stamp=False)
    buf.append(["a", "b"])
    buf.append(["c", "d", "e"])
    assert (buf.start, buf.end) == (2, 5)
    assert buf.read(0) == {"offset": 2, "end": 5, "missed": 2, "lines": ["c", "d", "e"]}


def test_preload_is_bounded_like_append_and_not_written(tmp_path: Path) -> None:
    path = tmp_path / "log"
    buf = LineBuffer(path, max_lines=3, stamp=False)
    buf.preload([f"old{i}" for i in range(5)])
    assert (buf.start, buf.end) == (2, 5) and buf.read(0)["lines"] == ["old2", "old3", "old4"]
    assert not path.exists()
    buf.append(["new"])
    assert buf.read(0) == {"offset": 3, "end": 6, "missed": 3, "lines": ["old3", "old4", "new"]}
    assert path.read_text() == "new\n"


def test_preload_and_append_agree() -> None:
    a, b = LineBuffer(max_lines=4, stamp=False), LineBuffer(max_lines=4, stamp=False)
    lines = [str(i) for i in range(9)]
    a.preload(lines)
    b.append(lines)
    assert a.read(0) == b.read(0) and (a.start, a.end) == (b.start, b.end) == (5, 9)
