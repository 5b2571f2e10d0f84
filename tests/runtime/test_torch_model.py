"""ModelBaseTorch's registration and checkpoint keys, in-process on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlnest_ray.errors import CheckpointError
from dlnest_ray.runtime.status import EnvType, RunningStatus
from dlnest_ray.runtime.torch_model import ModelBaseTorch


def net(value: float) -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


class Three(ModelBaseTorch):
    def init(self, args, dataset_info=None):
        self.G = net(1.0)
        self.D_0 = self.register(net(2.0))  # registered, then assigned: once
        self.D_1 = net(3.0)
        self.D_1 = self.register(self.D_1)  # assigned, then registered again: once
        self.heads = [self.register(net(4.0)), self.register(net(5.0))]
        self.optimizer = torch.optim.SGD(self.G.parameters(), lr=0.1)


def three(value_shift: float = 0.0) -> Three:
    model = Three({}, status=RunningStatus(env=EnvType.CPU, device=torch.device("cpu")))
    model.init({})
    if value_shift:
        with torch.no_grad():
            for m in model.modules:
                for p in m.parameters():
                    p.add_(value_shift)
    return model


def test_each_module_is_registered_once_and_named_where_it_lives() -> None:
    model = three()
    assert len(model.modules) == 5
    assert model.module_names() == ["G", "D_0", "D_1", "heads[0]", "heads[1]"]
    saved = model.get_save_dict()
    assert list(saved["modules"]) == ["G", "D_0", "D_1", "heads[0]", "heads[1]"]
    assert set(saved["optimizer"]) == {"optimizer"}


def test_named_state_loads_by_name_whatever_the_order() -> None:
    saved = three(value_shift=10.0).get_save_dict()
    saved["modules"] = dict(reversed(list(saved["modules"].items())))  # order does not matter
    model = three()
    model.load_save_dict(saved)
    assert model.D_0.weight[0, 0].item() == 12.0 and model.D_1.weight[0, 0].item() == 13.0


def test_an_old_positional_checkpoint_loads_and_double_registration_is_undone() -> None:
    trained = three(value_shift=10.0)
    states = [m.state_dict() for m in trained.modules]
    model = three()
    model.load_save_dict({i: s for i, s in enumerate(states)})  # DLNest's format: positions
    assert [m.weight[0, 0].item() for m in model.modules] == [11.0, 12.0, 13.0, 14.0, 15.0]
    # what the double-registration bug wrote: every module twice in a row
    doubled = [s for s in states for _ in range(2)]
    model = three()
    model.load_save_dict({i: s for i, s in enumerate(doubled)})
    assert [m.weight[0, 0].item() for m in model.modules] == [11.0, 12.0, 13.0, 14.0, 15.0]


def test_a_positional_checkpoint_that_cannot_be_matched_is_refused() -> None:
    states = [m.state_dict() for m in three(value_shift=1.0).modules][:3]
    with pytest.raises(CheckpointError, match="holds 3 modules by position but the model registers 5"):
        three().load_save_dict({i: s for i, s in enumerate(states)})


def test_a_state_that_does_not_fit_names_the_module() -> None:
    saved = three().get_save_dict()
    saved["modules"]["D_1"] = nn.Linear(3, 3).state_dict()
    with pytest.raises(CheckpointError, match="module 'D_1' does not fit"):
        three().load_save_dict(saved)


def test_user_attributes_shadow_dlnest_names_without_changing_dlnest() -> None:
    model = three()
    model.device = 0
    model.status = "mine"
    model.args = {"lr": 1}
    assert (model.device, model.status, model.args) == (0, "mine", {"lr": 1})
    assert model._dlnest_status.env is EnvType.CPU  # what dlnest-ray reads is untouched
    assert model.getArgs() == {} and model._args == {}  # the whole config, as DLNest's getArgs()
    model.extra = net(6.0)  # registering after the user replaced `device` still works
    assert model.module_names()[-1] == "extra"
