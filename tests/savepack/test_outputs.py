"""Which part of a package's output file is a task's: markers and the section filter."""

from __future__ import annotations

from dlnest_ray.savepack.outputs import TaskSection, marker_line, marker_task


def test_marker_round_trip() -> None:
    line = marker_line("T_0004", now=0.0)
    assert line.startswith("== T_0004 started ") and line.endswith(" ==")
    assert marker_task(line + "\n") == "T_0004"
    assert marker_task("== not a marker ==") is None and marker_task("Epoch 0 | loss 1") is None


FILE = (
    b"first run, foreground\n"
    + marker_line("T_0003").encode()
    + b"\nT3 epoch 0\nT3 stopped\n"
    + marker_line("T_0004").encode()
    + b"\nT4 epoch 1\nT4 epoch 2\n"
)


def test_the_cancelled_run_shows_only_its_own_part() -> None:
    """The review's case: `watch T_0003` of a run continued as T_0004 printed T_0004's epochs."""
    s = TaskSection("T_0003")
    out = s.feed(FILE) + s.finish()
    assert out.decode().splitlines()[1:] == ["T3 epoch 0", "T3 stopped"]
    assert s.done


def test_the_continuation_shows_from_its_marker_fed_in_pieces() -> None:
    s = TaskSection("T_0004")
    out = b"".join(s.feed(FILE[i : i + 7]) for i in range(0, len(FILE), 7)) + s.finish()
    assert out.decode().splitlines()[1:] == ["T4 epoch 1", "T4 epoch 2"]
    assert not s.done


def test_a_partial_line_waits_for_its_newline_or_the_end() -> None:
    s = TaskSection("T_0001")
    assert s.feed(marker_line("T_0001").encode() + b"\nhalf").endswith(b"==\n")
    assert s.feed(b" a line") == b""
    assert s.feed(b"\n") == b"half a line\n"
    s.feed(b"no newline at the end")
    assert s.finish() == b"no newline at the end"


def test_a_file_without_markers_is_shown_whole_and_other_tasks_get_nothing_of_a_marked_one() -> None:
    old = TaskSection("T_0001")
    assert old.feed(b"written before markers\nline 2\n") == b""  # held until the end: it might be T's
    assert old.finish() == b"written before markers\nline 2\n"
    other = TaskSection("T_0009")
    assert other.feed(FILE) == b"" and other.finish() == b""


def test_the_output_file_comes_from_the_task_not_from_what_exists() -> None:
    from dlnest_ray.savepack.outputs import task_output_name

    assert task_output_name({"placement": "gpu"}) == "_output.txt"
    assert task_output_name({"placement": "cpu"}, None) == "_output.txt"
    assert task_output_name({"placement": "ddp"}) == "_output_0.txt"
    assert task_output_name({"placement": "ddp"}, 1) == "_output_1.txt"
