"""Config loading: DLNest's merge rules, error messages, required keys and path resolution."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlnest_ray.config import CHECKPOINT_KEYS, load_config, merge, missing_keys, resolve_layout
from dlnest_ray.errors import ConfigError, DlnestError


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def full_args(**extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "root_file_path": ".",
        "model_file_path": "./Model/Model.py",
        "dataset_file_path": "./Dataset/Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "other_file_paths": ["./Model/Network.py"],
        "checkpoint_args": {
            "max_ckpt_in_fast_track": 1,
            "max_ckpt_in_slow_track": 0,
            "dilation_in_slow_track": 100,
            "max_ckpt_in_consistent_track": 1,
        },
    }
    args.update(extra)
    return args


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# code\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- merge order


def write_oracle_tree(tmp: Path) -> tuple[Path, Path]:
    root = write_json(
        tmp / "root.json",
        {
            "a": {"x": 1, "y": {"p": 1, "q": 2}},
            "lst": [1, 2],
            "child_jsons": ["sub/child1.json", "child2.json"],
        },
    )
    write_json(
        tmp / "sub" / "child1.json",
        {"a": {"y": {"q": 20, "r": 30}}, "lst": [9], "from": "child1", "child_jsons": ["grand.json"]},
    )
    write_json(tmp / "sub" / "grand.json", {"a": {"x": "grand"}, "from": "grand"})
    write_json(tmp / "child2.json", {"from": "child2"})
    freq = write_json(tmp / "freq.json", {"a": {"y": {"r": "freq"}}, "newkey": 1})
    return root, freq


def test_oracle_merge_order(tmp_path: Path) -> None:
    root, freq = write_oracle_tree(tmp_path)
    args = load_config(root, freq).args
    assert args == {
        "a": {"x": "grand", "y": {"p": 1, "q": 20, "r": "freq"}},
        "lst": [9],
        "from": "child2",
        "newkey": 1,
    }
    assert "child_jsons" not in args


def test_oracle_without_freq(tmp_path: Path) -> None:
    root, _ = write_oracle_tree(tmp_path)
    loaded = load_config(root)
    assert loaded.args == {"a": {"x": "grand", "y": {"p": 1, "q": 20, "r": 30}}, "lst": [9], "from": "child2"}
    assert loaded.freq_config is None
    # every file that went in, in merge order: own keys first, then children depth first
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in loaded.files] == [
        "root.json",
        "sub/child1.json",
        "sub/grand.json",
        "child2.json",
    ]


def test_freq_with_its_own_children(tmp_path: Path) -> None:
    root, _ = write_oracle_tree(tmp_path)
    # freq lives in another folder; its child path is relative to the freq file's folder
    freq = write_json(
        tmp_path / "tune" / "freq.json",
        {"from": "freq", "a": {"x": "freq"}, "child_jsons": ["more/fchild.json"]},
    )
    write_json(
        tmp_path / "tune" / "more" / "fchild.json", {"a": {"x": "fchild", "y": {"p": "fchild"}}, "lst": []}
    )
    loaded = load_config(root, freq)
    assert loaded.args == {
        "a": {"x": "fchild", "y": {"p": "fchild", "q": 20, "r": 30}},
        "lst": [],
        "from": "freq",
    }
    assert loaded.freq_config == freq.resolve()
    assert loaded.files[-2:] == (freq.resolve(), (tmp_path / "tune" / "more" / "fchild.json").resolve())


def test_file_own_keys_lose_to_its_children(tmp_path: Path) -> None:
    # the file's own keys are merged before its children, so a child overrides its parent
    root = write_json(tmp_path / "r.json", {"k": "root", "child_jsons": ["c.json"]})
    write_json(tmp_path / "c.json", {"k": "child"})
    assert load_config(root).args == {"k": "child"}


def test_scalars_and_lists_replace(tmp_path: Path) -> None:
    root = write_json(
        tmp_path / "r.json",
        {"d": {"a": 1}, "l": [1, {"x": 1}], "n": None, "child_jsons": ["c.json"]},
    )
    write_json(tmp_path / "c.json", {"d": 5, "l": [3], "n": "set", "new": {"z": 1}})
    assert load_config(root).args == {"d": 5, "l": [3], "n": "set", "new": {"z": 1}}


def test_child_paths_relative_to_listing_file(tmp_path: Path) -> None:
    root = write_json(tmp_path / "a" / "root.json", {"child_jsons": ["../b/c1.json"]})
    write_json(tmp_path / "b" / "c1.json", {"c1": True, "child_jsons": ["deeper/c2.json"]})
    write_json(tmp_path / "b" / "deeper" / "c2.json", {"c2": True})
    # a decoy with the same relative name next to the root must not be picked up
    write_json(tmp_path / "a" / "deeper" / "c2.json", {"decoy": True})
    assert load_config(root).args == {"c1": True, "c2": True}


def test_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    root = write_json(tmp_path / "r.json", {"child_jsons": ["a.json", "b.json"]})
    write_json(tmp_path / "a.json", {"v": "a", "child_jsons": ["shared.json"]})
    write_json(tmp_path / "b.json", {"v": "b", "child_jsons": ["shared.json"]})
    write_json(tmp_path / "shared.json", {"s": 1})
    assert load_config(root).args == {"v": "b", "s": 1}


def test_load_config_accepts_str_paths(tmp_path: Path) -> None:
    root, freq = write_oracle_tree(tmp_path)
    assert load_config(str(root), str(freq)).args == load_config(root, freq).args


# ----------------------------------------------------------------------------------------- errors


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"child_jsons": ["bad.json"]})
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": ,\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_config(root)
    msg = str(ei.value)
    assert str(bad.resolve()) in msg
    assert ":3:8:" in msg  # line 3, column 8: the stray comma
    assert isinstance(ei.value, DlnestError)


def test_malformed_root_json(tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    root.write_text('{"a": 1', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"root\.json:1:\d+"):
        load_config(root)


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", [1, 2])
    with pytest.raises(ConfigError, match=r"root\.json"):
        load_config(root)


def test_missing_root_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as ei:
        load_config(missing)
    assert str(missing) in str(ei.value)


def test_missing_child_file(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"child_jsons": ["sub/missing_child.json"]})
    with pytest.raises(ConfigError) as ei:
        load_config(root)
    assert str(tmp_path / "sub" / "missing_child.json") in str(ei.value)


def test_missing_freq_file(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"a": 1})
    with pytest.raises(ConfigError, match=r"missing_freq\.json"):
        load_config(root, tmp_path / "missing_freq.json")


def test_cycle_between_files(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"child_jsons": ["a.json"]})
    write_json(tmp_path / "a.json", {"child_jsons": ["b.json"]})
    write_json(tmp_path / "b.json", {"child_jsons": ["./a.json"]})
    with pytest.raises(ConfigError) as ei:
        load_config(root)
    msg = str(ei.value)
    assert "cycle" in msg
    assert "a.json" in msg and "b.json" in msg


def test_self_cycle(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"child_jsons": ["root.json"]})
    with pytest.raises(ConfigError, match="cycle") as ei:
        load_config(root)
    assert "root.json" in str(ei.value)


def test_cycle_in_freq_file(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"a": 1})
    freq = write_json(tmp_path / "freq.json", {"child_jsons": ["freq.json"]})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(root, freq)


def test_dict_onto_scalar_names_file_and_key(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"a": {"b": 1}, "child_jsons": ["c.json"]})
    child = write_json(tmp_path / "c.json", {"a": {"b": {"deep": 1}}})
    with pytest.raises(ConfigError) as ei:
        load_config(root)
    msg = str(ei.value)
    assert str(child.resolve()) in msg
    assert "a.b" in msg


def test_dict_onto_scalar_from_freq(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"lr": 0.1})
    freq = write_json(tmp_path / "freq.json", {"lr": {"base": 0.1}})
    with pytest.raises(ConfigError, match=r"freq\.json"):
        load_config(root, freq)


def test_child_jsons_must_be_list_of_paths(tmp_path: Path) -> None:
    root = write_json(tmp_path / "root.json", {"child_jsons": "c.json"})
    with pytest.raises(ConfigError, match=r"root\.json"):
        load_config(root)


# ----------------------------------------------------------------------------------------- merge()


def ref_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Independent reference of DLNest's replace rule."""
    out = copy.deepcopy(dict(base))
    for k, v in overlay.items():
        if isinstance(v, dict):
            if k not in out:
                out[k] = copy.deepcopy(v)
            elif isinstance(out[k], dict):
                out[k] = ref_merge(out[k], v)
            else:
                raise ConfigError("dict onto scalar")
        else:
            out[k] = copy.deepcopy(v)
    return out


KEYS = st.sampled_from(["a", "b", "c", "d"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["s", "t"]))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
DICTS = st.dictionaries(KEYS, VALUES, max_size=4)


@settings(max_examples=200, deadline=None)
@given(DICTS, DICTS)
def test_merge_matches_reference_and_does_not_mutate(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    base_before, overlay_before = copy.deepcopy(base), copy.deepcopy(overlay)
    try:
        expected: dict[str, Any] | None = ref_merge(base, overlay)
    except ConfigError:
        expected = None
    if expected is None:
        with pytest.raises(ConfigError):
            merge(base, overlay)
    else:
        assert merge(base, overlay) == expected
    assert base == base_before
    assert overlay == overlay_before


def test_merge_does_not_mutate_nested_inputs() -> None:
    base = {"a": {"x": 1, "y": {"p": 1}}, "l": [1]}
    overlay = {"a": {"y": {"q": 2}}, "l": [2]}
    base_before, overlay_before = copy.deepcopy(base), copy.deepcopy(overlay)
    out = merge(base, overlay)
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [2]}
    assert base == base_before and overlay == overlay_before
    # merging onto the result again leaves the first inputs alone too
    merge(out, {"a": {"y": {"p": 100}}})
    assert base == base_before and overlay == overlay_before


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DICTS, min_size=1, max_size=4))
def test_load_config_chain_matches_reference(layers: list[dict[str, Any]]) -> None:
    """root lists children c1..cn (flat): result = reduce(ref_merge, [root, c1, ..., cn])."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        names = [f"c{i}.json" for i in range(1, len(layers))]
        write_json(tmp / "root.json", {**layers[0], "child_jsons": names})
        for name, layer in zip(names, layers[1:], strict=True):
            write_json(tmp / name, layer)
        expected: dict[str, Any] | None = {}
        try:
            for layer in layers:
                assert expected is not None
                expected = ref_merge(expected, layer)
        except ConfigError:
            expected = None
        if expected is None:
            with pytest.raises(ConfigError):
                load_config(tmp / "root.json")
        else:
            assert load_config(tmp / "root.json").args == expected


# ----------------------------------------------------------------------------------------- required keys


def test_missing_keys_listed_all_at_once(tmp_path: Path) -> None:
    args = {"save_root": "./Saves", "checkpoint_args": {"max_ckpt_in_fast_track": 1}}
    assert set(missing_keys(args)) == {
        "model_name",
        "model_file_path",
        "dataset_name",
        "life_cycle_name",
        "dataset_file_path",
        "life_cycle_file_path",
        "checkpoint_args.max_ckpt_in_slow_track",
        "checkpoint_args.dilation_in_slow_track",
        "checkpoint_args.max_ckpt_in_consistent_track",
    }
    with pytest.raises(ConfigError) as ei:
        resolve_layout(args, tmp_path, source="my_root.json")
    msg = str(ei.value)
    assert "my_root.json" in msg
    for key in missing_keys(args):
        assert key in msg


def test_missing_everything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        resolve_layout({}, tmp_path, source="empty.json")
    msg = str(ei.value)
    for key in (
        "model_name",
        "model_file_path",
        "save_root",
        "dataset_name",
        "life_cycle_name",
        "dataset_file_path",
        "life_cycle_file_path",
        "checkpoint_args",
    ):
        assert key in msg


def test_full_args_have_no_missing_keys() -> None:
    assert missing_keys(full_args()) == []


def test_runner_aliases_of_dlnest_03(tmp_path: Path) -> None:
    args = full_args()
    args["runner_name"] = args.pop("model_name")
    args["runner_file_path"] = args.pop("model_file_path")
    assert missing_keys(args) == []
    for rel in ("Model/Model.py", "Dataset/Dataset.py", "LifeCycle.py", "Model/Network.py"):
        touch(tmp_path / rel)
    layout = resolve_layout(args, tmp_path, source="root.json")
    assert layout.model_name == "Model"
    assert layout.model_file == (tmp_path / "Model" / "Model.py").resolve()


@pytest.mark.parametrize("key", CHECKPOINT_KEYS)
def test_checkpoint_args_must_be_nonnegative_ints(tmp_path: Path, key: str) -> None:
    args = full_args()
    args["checkpoint_args"] = {**args["checkpoint_args"], key: -1}
    with pytest.raises(ConfigError, match=key):
        resolve_layout(args, tmp_path, source="root.json", check_files=False)


def test_dilation_zero_refused(tmp_path: Path) -> None:
    args = full_args()
    args["checkpoint_args"] = {**args["checkpoint_args"], "dilation_in_slow_track": 0}
    with pytest.raises(ConfigError, match="dilation_in_slow_track"):
        resolve_layout(args, tmp_path, source="root.json", check_files=False)


# ----------------------------------------------------------------------------------------- paths


def test_paths_resolve_against_root_file_path(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "configs"
    args = full_args(root_file_path="../project", save_root="../runs", other_file_paths=["./extra"])
    layout = resolve_layout(args, cfg_dir, source="root.json", check_files=False)
    project = (tmp_path / "project").resolve()
    assert layout.root_dir == project
    assert layout.save_root == (tmp_path / "runs").resolve()
    assert layout.model_file == project / "Model" / "Model.py"
    assert layout.dataset_file == project / "Dataset" / "Dataset.py"
    assert layout.life_cycle_file == project / "LifeCycle.py"
    assert layout.other_files == (project / "extra",)


def test_root_file_path_relative_to_root_config_folder_via_load(tmp_path: Path) -> None:
    """Loading from any cwd: root_file_path is relative to the root config's folder, not the cwd."""
    project = tmp_path / "project"
    for rel in ("Model/Model.py", "Dataset/Dataset.py", "LifeCycle.py", "Model/Network.py"):
        touch(project / rel)
    root = write_json(tmp_path / "cfg" / "root.json", full_args(root_file_path="../project"))
    loaded = load_config(root)
    layout = resolve_layout(loaded.args, loaded.root_config.parent, source=str(root))
    assert layout.root_dir == project.resolve()
    assert layout.save_root == (project / "Saves").resolve()
    assert all(p.is_file() for p in layout.code_files)


def test_absolute_code_paths_kept(tmp_path: Path) -> None:
    absolute = touch(tmp_path / "elsewhere" / "m.py")
    args = full_args(model_file_path=str(absolute))
    layout = resolve_layout(args, tmp_path / "proj", source="root.json", check_files=False)
    assert layout.model_file == absolute.resolve()


def test_missing_code_files_named(tmp_path: Path) -> None:
    touch(tmp_path / "Model" / "Model.py")
    touch(tmp_path / "LifeCycle.py")
    with pytest.raises(ConfigError) as ei:
        resolve_layout(full_args(), tmp_path, source="root.json")
    msg = str(ei.value)
    assert "root.json" in msg
    assert str(tmp_path / "Dataset" / "Dataset.py") in msg
    assert str(tmp_path / "Model" / "Network.py") in msg
    assert str(tmp_path / "LifeCycle.py") not in msg
    # the same args pass without the file check
    resolve_layout(full_args(), tmp_path, source="root.json", check_files=False)


def test_all_code_files_present(tmp_path: Path) -> None:
    for rel in ("Model/Model.py", "Dataset/Dataset.py", "LifeCycle.py", "Model/Network.py"):
        touch(tmp_path / rel)
    layout = resolve_layout(full_args(), tmp_path, source="root.json")
    assert layout.code_files == tuple(
        (tmp_path / rel).resolve()
        for rel in ("Model/Model.py", "Dataset/Dataset.py", "LifeCycle.py", "Model/Network.py")
    )
    assert (layout.model_name, layout.dataset_name, layout.life_cycle_name) == (
        "Model",
        "Dataset",
        "LifeCycle",
    )


def test_template_configs_load(repo_root: Path) -> None:
    root = repo_root / "dlnest_ray" / "templates" / "blank" / "root_config.json"
    freq = root.with_name("freq_config.json")
    loaded = load_config(root, freq)
    assert "child_jsons" not in loaded.args
    assert loaded.args["epochs"] == 2
    assert loaded.args["model_config"]["hidden"] == 32
    layout = resolve_layout(loaded.args, loaded.root_config.parent, source=str(root))
    assert layout.model_file == (root.parent / "Model" / "Model.py").resolve()


def test_an_empty_save_root_is_the_project_folder_as_in_dlnest(tmp_path: Path) -> None:
    layout = resolve_layout(full_args(save_root=""), tmp_path, source="root.json", check_files=False)
    assert layout.save_root == tmp_path.resolve()
    with pytest.raises(ConfigError, match="'save_root' must be a path"):
        resolve_layout(full_args(save_root=None), tmp_path, source="root.json", check_files=False)


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (["LogInit", "Tensorboard"], "unknown plugin 'Tensorboard'"),
        ("LogInit", "'plugins' must be a list"),
        (["MailsNote", "MailsNote"], "'MailsNote' is listed twice"),
        (["/abs/MyPlugin.py"], "unknown plugin '/abs/MyPlugin.py'"),
    ],
)
def test_plugins_are_checked_at_submit(tmp_path: Path, plugins: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_layout(full_args(plugins=plugins), tmp_path, source="plugins_config.json", check_files=False)
    assert str(info.value).startswith("plugins_config.json: ")


def test_known_plugins_and_their_settings_pass(tmp_path: Path) -> None:
    args = full_args(
        plugins=["LogInit", "AutoTensorboardScalar", "SimpleCMDVisualize", "MailsNote"],
        plugins_config={"LogInit": {"level": "DEBUG"}, "Unlisted": {"x": 1}},
    )
    resolve_layout(args, tmp_path, source="root.json", check_files=False)
    with pytest.raises(ConfigError, match="'plugins_config' must map plugin names to dicts"):
        resolve_layout(full_args(plugins_config={"LogInit": 3}), tmp_path, source="r", check_files=False)
