"""DLNest's camelCase names, pinned pair by pair: each works in both directions on its base class.

The lists below are written out on purpose (not read from the code): adding or losing an alias makes
:func:`test_the_alias_tables_are_exactly_these` fail until this file says so.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from dlnest_ray.runtime.aliases import Aliased
from dlnest_ray.runtime.bases import SKIP, DatasetBase, LifeCycleBase, ModelBase, skipped
from dlnest_ray.runtime.torch_model import ModelBaseTorch

COMPONENT = (
    ("get_args", "getArgs"),
    ("get_save_dict", "getSaveDict"),
    ("load_save_dict", "loadSaveDict"),
)
DATASET = (("sampler", "getSampler"),)
MODEL = (
    ("init_log", "initLog"),
    ("init_optimizer", "initOptimizer"),
    ("run_one_step", "runOneStep"),
    ("validation_init", "validationInit"),
    ("validate_a_batch", "validateABatch"),
    ("validation_analyze", "validationAnalyze"),
    ("reduce_sum", "_reduceSum"),
    ("reduce_mean", "_reduceMean"),
)
PREDICATES = (
    ("need_visualize", "needVisualize"),
    ("need_validation", "needValidation"),
    ("command_line_output", "commandLineOutput"),
    ("need_save_model", "needSaveModel"),
    ("hold_this_checkpoint", "holdThisCheckpoint"),
    ("need_continue_train", "needContinueTrain"),
    ("train_aborting", "trainAborting"),
)
HOOKS = (
    ("before_all", "BAll"),
    ("after_all", "AAll"),
    ("before_dataset_init", "BDatasetInit"),
    ("after_dataset_init", "ADatasetInit"),
    ("before_model_init", "BModelInit"),
    ("after_model_init", "AModelInit"),
    ("before_train", "BTrain"),
    ("after_train", "ATrain"),
    ("before_one_epoch", "BOneEpoch"),
    ("after_one_epoch", "AOneEpoch"),
    ("before_model_one_step", "BModelOneStep"),
    ("after_model_one_step", "AModelOneStep"),
    ("before_visualize", "BVisualize"),
    ("after_visualize", "AVisualize"),
    ("before_validation", "BValidation"),
    ("after_validation", "AValidation"),
    ("before_validate_a_batch", "BValidateABatch"),
    ("after_validate_a_batch", "AValidateABatch"),
    ("before_validation_analyze", "BValidationAnalyze"),
    ("after_validation_analyze", "AValidationAnalyze"),
    ("before_save_model", "BSaveModel"),
    ("after_save_model", "ASaveModel"),
)
EXPECTED: dict[type[Aliased], tuple[tuple[str, str], ...]] = {
    DatasetBase: COMPONENT + DATASET,
    ModelBase: COMPONENT + MODEL,
    ModelBaseTorch: COMPONENT + MODEL,
    LifeCycleBase: COMPONENT + PREDICATES + HOOKS,
}
CASES = [
    pytest.param(base, snake, camel, id=f"{base.__name__}.{camel}")
    for base, pairs in EXPECTED.items()
    for snake, camel in pairs
]


def _subclass(base: type, name: str) -> Any:
    """An instance of a user subclass of ``base`` defining only ``name``, which records its call."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return (name, args, kwargs)

    return type(f"User{base.__name__}", (base,), {name: method})()


def test_the_alias_tables_are_exactly_these() -> None:
    for base, pairs in EXPECTED.items():
        assert sorted(base._ALIASES) == sorted(pairs), base.__name__
        assert len(set(base._ALIASES)) == len(base._ALIASES), f"{base.__name__} lists a pair twice"


@pytest.mark.parametrize(("base", "snake", "camel"), CASES)
def test_defining_the_camel_name_is_what_the_framework_calls(base: type, snake: str, camel: str) -> None:
    obj = _subclass(base, camel)
    assert getattr(obj, snake)(1, "two", key=3) == (camel, (1, "two"), {"key": 3})
    assert getattr(obj, camel)(1) == (camel, (1,), {})


@pytest.mark.parametrize(("base", "snake", "camel"), CASES)
def test_calling_the_camel_name_reaches_the_snake_definition(base: type, snake: str, camel: str) -> None:
    obj = _subclass(base, snake)
    assert getattr(obj, camel)(1, "two", key=3) == (snake, (1, "two"), {"key": 3})
    assert getattr(obj, snake)(1) == (snake, (1,), {})


def test_every_hook_is_a_documented_no_op_method_of_the_base() -> None:
    declared = sorted(n for n in vars(LifeCycleBase) if n.startswith(("before_", "after_")))
    assert declared == sorted(snake for snake, _ in HOOKS)
    lc = LifeCycleBase()
    for snake, camel in HOOKS:
        method = vars(LifeCycleBase)[snake]
        assert method.__qualname__ == f"LifeCycleBase.{snake}", "declared in the class body"
        doc = inspect.getdoc(method) or ""
        assert len(doc) > 40, snake
        if snake.startswith("before_"):
            assert '"Skip"' in doc, f"{snake}'s docstring says what Skip does"
        assert getattr(lc, snake)() is None
        assert getattr(lc, camel)() is None


def test_a_camel_override_calling_super_reaches_the_base_not_itself() -> None:
    class Model(ModelBaseTorch):
        def getSaveDict(self) -> dict[Any, Any]:  # DLNest code: extend what the base saves
            d = super().getSaveDict()
            d["extra"] = 1
            return d

    class LifeCycle(LifeCycleBase):
        def BAll(self) -> Any:
            self.__dict__["seen"] = True
            return super().BAll()

        def needContinueTrain(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
            return not super().needContinueTrain(epoch, log, args)

    saved = Model().get_save_dict()
    assert saved["extra"] == 1 and {"modules", "optimizer", "scheduler"} <= set(saved)
    lc = LifeCycle()
    assert lc.before_all() is None and lc.__dict__["seen"] is True
    assert lc.need_continue_train(0, {}, {}) is True


def test_a_camel_override_of_a_parent_user_class_is_inherited() -> None:
    class Parent(LifeCycleBase):
        def BOneEpoch(self) -> str:
            return SKIP

    class Child(Parent):
        pass

    assert skipped(Child().before_one_epoch())


def test_a_base_listing_a_missing_method_fails_when_defined() -> None:
    with pytest.raises(TypeError, match="no_such_method"):

        class Broken(Aliased):
            _DLNEST_BASE = True
            _ALIASES = (("no_such_method", "noSuchMethod"),)


def test_skipped_is_only_the_skip_string() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise AssertionError("compared")

        __hash__ = object.__hash__

    assert skipped("Skip") and skipped(SKIP)
    assert not any(skipped(v) for v in (None, "skip", "", True, Weird()))
