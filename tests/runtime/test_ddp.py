"""A 2-rank DDP run on CPU (gloo), started by the test as two processes with the usual env variables."""

from __future__ import annotations

import json

import pytest

from dlnest_ray import SavePackage
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import first_module, write_project

from .ddp_helpers import run_ranks

N_TRAIN = 128
EPOCHS = 2


@pytest.mark.slow
def test_two_rank_gloo_run(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    cfg = write_project(
        tmp_path / "proj",
        epochs=EPOCHS,
        n_train=N_TRAIN,
        n_val=64,
        record_dir=records,
        extra={"ddp_timeout_s": 60},
    )
    pkg = SavePackage(cfg).save_to_new_dir()
    codes, details = run_ranks(pkg, tmp_path)
    assert codes == [0, 0], details

    # one output file per rank, none for a single process
    assert (pkg / "_output_0.txt").is_file() and (pkg / "_output_1.txt").is_file()
    assert not (pkg / "_output.txt").exists()
    assert "val acc" in (pkg / "_output_0.txt").read_text()
    assert "val acc" not in (pkg / "_output_1.txt").read_text()  # the model prints on the main rank only

    # each rank trained on its own shard: per epoch disjoint, together the whole training set
    recs = {r: json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)}
    for r, rec in recs.items():
        assert (rec["rank"], rec["world_size"], rec["env"]) == (r, 2, "DDP")
    for epoch in map(str, range(EPOCHS)):
        seen0, seen1 = recs[0]["seen"][epoch], recs[1]["seen"][epoch]
        assert len(seen0) == len(seen1) == N_TRAIN // 2
        assert not set(seen0) & set(seen1)
        assert set(seen0) | set(seen1) == set(range(N_TRAIN))
    assert recs[0]["seen"]["0"] != recs[0]["seen"]["1"]  # the sampler reshuffles per epoch

    # reduce_mean: the same value on both ranks (the ranks' own losses differ)
    assert recs[0]["rank_mean"] == recs[1]["rank_mean"] == 0.5
    assert recs[0]["loss"] == pytest.approx(recs[1]["loss"], rel=1e-6, abs=1e-7)
    assert recs[0]["local_loss"] != recs[1]["local_loss"]
    for own0, own1, mean in zip(recs[0]["local_loss"], recs[1]["local_loss"], recs[0]["loss"], strict=True):
        assert mean == pytest.approx((own0 + own1) / 2, rel=1e-5)

    # one checkpoint set (rank 0 writes), loadable; one segment; metrics written once per epoch
    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == list(range(EPOCHS))
    files = sorted(f.name for f in (pkg / "Checkpoints").iterdir())
    assert files == [f"state_{i}.ckpt" for i in range(EPOCHS)]
    state = opened.state_dict()
    assert state["finished_epoch"] == EPOCHS - 1
    assert state["global_step"] == EPOCHS * (N_TRAIN // 2 // 32)
    assert not any(k.startswith("module.") for k in first_module(state))  # saved from the raw module
    segs = json.loads((pkg / "_package.json").read_text())["segments"]
    assert len(segs) == 1
    assert (segs[0]["env"], segs[0]["world_size"], segs[0]["status"]) == ("DDP", 2, "succeeded")
    rows = read_metrics(pkg).to_pylist()
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
