"""``move_to_device``: tensors move, containers keep their structure and type, other values pass through."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple

import torch

from dlnest_ray.runtime.trainer import move_to_device

Pair = namedtuple("Pair", ["x", "y"])
META = torch.device("meta")


def test_bare_tensor():
    t = torch.arange(6.0).reshape(2, 3)
    same = move_to_device(t, torch.device("cpu"))
    assert isinstance(same, torch.Tensor) and torch.equal(same, t)
    moved = move_to_device(t, META)
    assert moved.device.type == "meta" and moved.shape == (2, 3)


def test_nested_structure_is_preserved_on_cpu():
    a, b, c = torch.ones(2), torch.zeros(3, dtype=torch.long), torch.tensor([1.5])
    batch = {"inputs": [a, (b, 7)], "pair": Pair(x=c, y="label"), "meta": {"id": 3, "name": None}}
    out = move_to_device(batch, torch.device("cpu"))
    assert type(out) is dict and set(out) == {"inputs", "pair", "meta"}
    assert type(out["inputs"]) is list and type(out["inputs"][1]) is tuple
    assert torch.equal(out["inputs"][0], a)
    assert torch.equal(out["inputs"][1][0], b) and out["inputs"][1][0].dtype == torch.long
    assert out["inputs"][1][1] == 7
    assert type(out["pair"]) is Pair and torch.equal(out["pair"].x, c) and out["pair"].y == "label"
    assert out["meta"] == {"id": 3, "name": None}


def test_every_nested_tensor_moves():
    batch = [torch.ones(1), (torch.ones(2), Pair(torch.ones(3), 4)), {"k": [torch.ones(4)]}]
    out = move_to_device(batch, META)
    assert out[0].device == META
    assert out[1][0].device == META
    assert type(out[1][1]) is Pair and out[1][1].x.device == META and out[1][1].y == 4
    assert out[2]["k"][0].device == META and out[2]["k"][0].shape == (4,)


def test_mapping_subclasses_keep_their_type():
    ordered = OrderedDict([("b", torch.ones(1)), ("a", torch.zeros(1))])
    out = move_to_device(ordered, META)
    assert type(out) is OrderedDict and list(out) == ["b", "a"] and out["a"].device == META


def test_defaultdict_batch():
    """A collate function may return a defaultdict; its constructor's first argument is the factory."""
    counts = defaultdict(list, {"x": torch.ones(2)})
    moved = move_to_device(counts, META)
    assert isinstance(moved, dict) and moved["x"].device == META
