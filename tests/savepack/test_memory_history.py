"""The memory fingerprint and the peaks of look-alike packages (savepack/memory_history.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlnest_ray.errors import ConfigError
from dlnest_ray.savepack.memory_history import (
    FINGERPRINT_KEY,
    Learned,
    fingerprint,
    learned_peak,
    neutral_keys,
)

ARGS = {"epochs": 3, "seed": 1, "model_config": {"lr": 0.1, "hidden": 16}, "save_root": "/a"}
CODE = [("Model/Model.py", b"class Model: pass\n")]


def test_neutral_keys_plain_and_dotted_are_ignored_and_nothing_else() -> None:
    base = fingerprint(ARGS, CODE, ["epochs", "seed"])
    assert fingerprint({**ARGS, "epochs": 30, "seed": 7, "save_root": "/b"}, CODE, ["epochs", "seed"]) == base
    other_lr = {**ARGS, "model_config": {"lr": 0.5, "hidden": 16}}
    assert fingerprint(other_lr, CODE, ["epochs", "seed"]) != base
    assert fingerprint(other_lr, CODE, ["epochs", "seed", "lr"]) == fingerprint(
        ARGS, CODE, ["epochs", "seed", "lr"]
    )
    assert fingerprint(other_lr, CODE, ["model_config.lr"]) == fingerprint(ARGS, CODE, ["model_config.lr"])
    wider = {**ARGS, "model_config": {"lr": 0.1, "hidden": 64}}
    assert fingerprint(wider, CODE, ["epochs", "seed", "lr"]) != base


def test_the_code_is_part_of_the_fingerprint() -> None:
    assert fingerprint(ARGS, [("Model/Model.py", b"class Model: x = 1\n")], ["epochs"]) != fingerprint(
        ARGS, CODE, ["epochs"]
    )


@pytest.mark.parametrize("bad", ["epochs", [1, "seed"], [""], {"a": 1}])
def test_memory_neutral_keys_must_be_a_list_of_names(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.json: memory_neutral_keys must be a list of key names"):
        neutral_keys({"memory_neutral_keys": bad}, "cfg.json")
    assert neutral_keys({}) == ("epochs", "seed")


def _package(root: Path, name: str, meta: dict[str, object] | str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    text = meta if isinstance(meta, str) else json.dumps({"version": 2, "checkpoints": {}, **meta})
    (folder / "_package.json").write_text(text)


def test_learned_peak_takes_the_largest_of_the_look_alikes_and_skips_the_rest(tmp_path: Path) -> None:
    seg = {"kind": "train", "peak_gpu_mb": 4100}
    _package(tmp_path, "a", {FINGERPRINT_KEY: "f1", "segments": [seg, {**seg, "peak_gpu_mb": 4170}]})
    _package(tmp_path, "b", {FINGERPRINT_KEY: "f1", "segments": [{**seg, "peak_gpu_mb": 3900}]})
    _package(tmp_path, "c", {FINGERPRINT_KEY: "f2", "segments": [{**seg, "peak_gpu_mb": 9000}]})
    _package(tmp_path, "d", {FINGERPRINT_KEY: "f1", "segments": [{"kind": "train"}]})  # a CPU run: no peak
    _package(tmp_path, "e", {"segments": [{**seg, "peak_gpu_mb": 9000}]})  # a DLNest package: no fingerprint
    _package(tmp_path, "f", "{ damaged")
    _package(
        tmp_path / "sweep", "0_lr=1", {FINGERPRINT_KEY: "f1", "segments": [{**seg, "peak_gpu_mb": 4000}]}
    )
    assert learned_peak(tmp_path, "f1") == Learned(peak_mb=4170, runs=3)
    assert learned_peak(tmp_path, "f1", exclude=tmp_path / "a") == Learned(peak_mb=4000, runs=2)
    assert learned_peak(tmp_path, "nope") is None and learned_peak(tmp_path / "missing", "f1") is None
