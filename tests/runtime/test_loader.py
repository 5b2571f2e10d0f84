"""The package's copy of the user code runs: sibling imports work, a same-named module imported from
elsewhere does not shadow it, and editing the project after the package was created changes nothing."""

from __future__ import annotations

import importlib.util
import sys

from dlnest_ray import SavePackage
from dlnest_ray.runtime.loader import load_user_classes
from dlnest_ray.runtime.trainer import TrainOptions, train
from tests.projects import write_project

CPU = TrainOptions(cpu=True)


def import_foreign_helper(folder) -> object:
    folder.mkdir()
    path = folder / "helper.py"
    path.write_text('MARK = "foreign-helper"\n')
    spec = importlib.util.spec_from_file_location("helper", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["helper"] = module
    sys.path.insert(0, str(folder))
    return module


def test_sibling_import_is_not_shadowed_by_a_foreign_module(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    foreign = import_foreign_helper(tmp_path / "elsewhere")
    result = train(pkg, CPU)  # the foreign helper has no Net: importing it would fail the run
    assert result.finished_epoch == 0
    out = (pkg / "_output.txt").read_text()
    assert "helper mark: original-helper" in out
    assert sys.modules["helper"] is not foreign
    assert sys.modules["helper"].__file__ == str(pkg / "Model" / "helper.py")


def test_editing_the_project_after_packaging_does_not_affect_the_run(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    project = cfg.parent
    helper = project / "Model" / "helper.py"
    helper.write_text(helper.read_text().replace("original-helper", "edited-helper"))
    model = project / "Model" / "Model.py"
    model.write_text(model.read_text() + '\nraise ImportError("the original project file was imported")\n')
    (project / "model_config.json").write_text("{ not json")
    train(pkg, CPU)
    out = (pkg / "_output.txt").read_text()
    assert "helper mark: original-helper" in out
    assert "edited-helper" not in out
    # a package made from the edited helper (and a repaired model) uses the edit: the copies differ
    model.write_text(
        model.read_text().replace('raise ImportError("the original project file was imported")', "")
    )
    (project / "model_config.json").write_text(
        '{"model_config": {"hidden": 8, "dropout": 0.1, "lr": 0.01, "lr_gamma": 0.9}}'
    )
    second = SavePackage(cfg).save_to_new_dir()
    train(second, CPU)
    assert "helper mark: edited-helper" in (second / "_output.txt").read_text()
    # and the first package still runs its own copy when it is loaded again in the same process
    classes = load_user_classes(SavePackage.open(pkg).args, pkg)
    assert sys.modules[classes.model.__module__].__file__ == str(pkg / "Model" / "Model.py")
    assert sys.modules["helper"].MARK == "original-helper"


def test_args_point_at_the_copies(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    args = SavePackage.open(pkg).args
    assert args["model_file_path"] == "./Model/Model.py"
    assert args["other_file_paths"] == ["./Model/helper.py"]
    assert (pkg / "Model" / "helper.py").read_text() == (cfg.parent / "Model" / "helper.py").read_text()
    classes = load_user_classes(args, pkg)
    assert {c.__name__ for c in (classes.model, classes.dataset, classes.life_cycle)} == {
        "Model",
        "Dataset",
        "LifeCycle",
    }
    assert sys.modules[classes.dataset.__module__].__file__ == str(pkg / "Dataset" / "Dataset.py")
