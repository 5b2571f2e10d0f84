"""Building a run's components: what is refused, and the hooks around each part in DLNest's order."""

from __future__ import annotations

from typing import Any

import pytest

from dlnest_ray.errors import CheckpointError, UserCodeError
from dlnest_ray.runtime.bases import DatasetBase, LifeCycleBase, ModelBase
from dlnest_ray.runtime.build import build_components, new_components, training_state
from dlnest_ray.runtime.loader import UserClasses
from dlnest_ray.runtime.status import RunningStatus


class Dataset(DatasetBase):
    def init(self, args: dict[str, Any]) -> tuple[Any, Any, Any]:
        return {"n": 2}, [1, 2], [3]


class Model(ModelBase):
    def init_log(self) -> dict[str, Any]:
        return {"loss": []}


def _recording_life_cycle(skip: set[str], calls: list[str]) -> type[LifeCycleBase]:
    class LifeCycle(LifeCycleBase):
        def BDatasetInit(self) -> str | None:  # DLNest's name, routed to before_dataset_init
            calls.append("before_dataset_init")
            return "Skip" if "dataset" in skip else None

        def after_dataset_init(self) -> None:
            calls.append("after_dataset_init")

        def before_model_init(self) -> str | None:
            calls.append("before_model_init")
            return "Skip" if "model" in skip else None

        def AModelInit(self) -> None:
            calls.append("after_model_init")

    return LifeCycle


@pytest.mark.parametrize("skip", [set(), {"dataset"}, {"model"}])
def test_each_part_is_built_between_its_hooks_unless_skipped(skip: set[str]) -> None:
    calls: list[str] = []
    life_cycle = _recording_life_cycle(skip, calls)
    classes = UserClasses(model=Model, dataset=Dataset, life_cycle=life_cycle)
    comps = build_components(classes, {}, RunningStatus(), package=None, state=None)
    assert calls == [
        "before_dataset_init",
        "after_dataset_init",
        "before_model_init",
        "after_model_init",
    ]
    assert (comps.dataset is None) == ("dataset" in skip)
    assert (comps.model is None) == ("model" in skip)
    assert comps.life_cycle.dataset is comps.dataset and comps.life_cycle.model is comps.model
    if "dataset" not in skip:
        assert comps.train_loader == [1, 2] and comps.dataset_info == {"n": 2}
    if "model" not in skip:
        assert comps.log == {"loss": []} and comps.model.log is comps.log


def test_a_life_cycle_class_must_subclass_the_base() -> None:
    classes = UserClasses(model=Model, dataset=Dataset, life_cycle=object)
    with pytest.raises(UserCodeError, match=r"object must subclass dlnest_ray\.LifeCycleBase"):
        new_components(classes, {}, RunningStatus(), package=None)


def test_a_checkpoint_must_hold_a_training_state() -> None:
    assert training_state({"finished_epoch": 1}, 0) == {"finished_epoch": 1}
    with pytest.raises(CheckpointError, match="checkpoint 3 holds a list"):
        training_state([1, 2], 3)
