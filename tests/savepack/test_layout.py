"""savepack.layout: every name inside a save package, and the modules that take theirs from it."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch

from dlnest_ray.atomic import temp_path
from dlnest_ray.savepack import layout
from dlnest_ray.savepack.package import SavePackage

from ._helpers import new_package


def test_the_documented_layout(tmp_path: Path) -> None:
    p = tmp_path / "pkg"
    assert layout.args_path(p) == p / "args.json"
    assert layout.manifest_path(p) == p / "_package.json"
    assert layout.ckpt_dir(p) == p / "Checkpoints"
    assert layout.ckpt_path(p, 3) == p / "Checkpoints" / "state_3.ckpt"
    assert layout.ckpt_path(p, 3, "other_") == p / "Checkpoints" / "other_3.ckpt"
    assert layout.metrics_path(p) == p / "metrics.parquet"
    assert layout.analyze_output_path(p) == p / "_analyze_output.txt"
    assert layout.tb_dir(p) == p / "tb"
    assert layout.tb_steps_dir(p) == p / "tb" / "steps"
    assert layout.configs_dir(p) == p / "_configs"
    assert layout.scripts_dir(p) == p / "AnalyzeScripts"
    assert layout.run_dir(p) == p / ".dlnest_run"
    assert layout.stop_file(p, "T_0007") == p / ".dlnest_run" / "T_0007.stop"
    assert layout.pid_file(p, "T_0007", 1) == p / ".dlnest_run" / "T_0007.rank1.pgid"


def test_a_pid_record_names_its_node_and_older_records_still_read() -> None:
    assert layout.parse_pid_record(layout.pid_record(4242, "3f2a9b1c")) == (4242, "3f2a9b1c")
    assert layout.parse_pid_record("4242") == (4242, "")  # written before nodes were recorded
    assert layout.parse_pid_record(layout.pid_record(7, "")) == (7, "")
    for bad in ["", "x 1", "1 a b"]:
        with pytest.raises(ValueError):
            layout.parse_pid_record(bad)


@pytest.mark.parametrize(
    ("rank", "name"), [(None, "_output.txt"), (-1, "_output.txt"), (0, "_output_0.txt"), (3, "_output_3.txt")]
)
def test_output_names(tmp_path: Path, rank: int | None, name: str) -> None:
    assert layout.output_name(rank) == name
    assert layout.output_path(tmp_path, rank) == tmp_path / name
    assert layout.is_output_name(name)


def test_config_copies_are_package_relative() -> None:
    assert layout.config_copy(Path("configs/a.json")).as_posix() == "_configs/configs/a.json"
    assert layout.external_config_copy(2, "freq.json").as_posix() == "_configs/_external/2-freq.json"


def test_checkpoint_names_parse_as_dlnest_reads_them() -> None:
    assert layout.ckpt_name(12) == "state_12.ckpt"
    assert layout.parse_ckpt_name("state_12.ckpt") == ("state_", 12)
    assert layout.parse_ckpt_name("other_7.ckpt") == ("other_", 7)
    for not_a_checkpoint in ("state_.ckpt", "state_1.ckpt.tmp-ab12", "state_1.txt", "notes"):
        assert layout.parse_ckpt_name(not_a_checkpoint) is None
    assert fnmatch.fnmatch("state_4.ckpt", layout.ckpt_glob())
    assert not fnmatch.fnmatch("other_4.ckpt", layout.ckpt_glob())
    assert fnmatch.fnmatch("other_4.ckpt", layout.ckpt_glob(""))


def test_temp_glob_matches_what_atomic_writes_and_nothing_else() -> None:
    for target in ("_package.json", "state_3.ckpt", "metrics.parquet"):
        assert fnmatch.fnmatch(temp_path(Path("/x") / target).name, layout.TEMP_GLOB)
        assert not fnmatch.fnmatch(target, layout.TEMP_GLOB)


def test_reserved_names() -> None:
    for name in (
        "args.json",
        "_package.json",
        "Checkpoints",
        "_output.txt",
        "_output_2.txt",
        "metrics.parquet",
    ):
        assert layout.is_reserved(name), name
    for name in ("desc: lr 3e-3", "_output_x.txt", "output.txt", "notes"):
        assert not layout.is_reserved(name), name


def test_pure_no_disk_access(tmp_path: Path) -> None:
    where = tmp_path / "nowhere"
    layout.stop_file(where, "T_1")
    layout.pid_file(where, "T_1", 0)
    layout.ckpt_path(where, 0)
    layout.tb_steps_dir(where)
    assert not where.exists()
    assert layout.stop_file("rel", "T_1") == Path("rel/.dlnest_run/T_1.stop")  # relative stays relative


def test_a_real_package_is_where_the_layout_says(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    pkg.save_checkpoint({"w": torch.zeros(1)})
    with pkg.output_file(rank=1) as f:
        f.write("x\n")
    assert layout.manifest_path(pkg.path).is_file() and layout.args_path(pkg.path).is_file()
    assert layout.ckpt_path(pkg.path, 0).is_file()
    assert pkg.ckpt_path(0) == layout.ckpt_path(pkg.path, 0)
    assert layout.output_path(pkg.path, 1).read_text() == "x\n"
    assert SavePackage.open(pkg.path).output_path() == layout.output_path(pkg.path)


def test_other_modules_take_their_names_from_the_layout() -> None:
    from dlnest_ray.runtime import entry, tensorboard
    from dlnest_ray.savepack import create, facts, metrics, outputs, package

    assert (entry.stop_file, entry.pid_file, entry.RUN_DIR) == (
        layout.stop_file,
        layout.pid_file,
        ".dlnest_run",
    )
    assert entry.stop_file("/p", "T_2") == Path("/p/.dlnest_run/T_2.stop")
    assert tensorboard.TB_DIR == layout.TB_DIR == "tb"
    assert metrics.METRICS_FILE == layout.METRICS_FILE == "metrics.parquet"
    assert create.SCRIPTS_DIR == facts.SCRIPTS_DIR == layout.SCRIPTS_DIR
    assert (package.MANIFEST, package.ARGS, package.CKPT_DIR) == ("_package.json", "args.json", "Checkpoints")
    assert outputs.task_output_name({"placement": "ddp"}, 1) == "_output_1.txt"
    assert outputs.task_output_name({"placement": "ddp"}) == "_output_0.txt"
    assert outputs.task_output_name({"placement": "shared"}) == "_output.txt"


def test_the_analyzer_output_file_agrees() -> None:
    analyzer = pytest.importorskip("dlnest_ray.actors.analyzer")  # imports Ray
    assert analyzer.OUTPUT_FILE == layout.ANALYZE_OUTPUT_FILE
