"""The center's sweeps (issue 15; a mixin of :class:`~.center.Center`): a search space expanded into
trials that are ordinary queued training runs, deleted as one unit, and stopped early by a rule.

* :meth:`SweepOps.sweep` checks everything first — the space, the trial count, the stop rule, every key
  against the merged config (:func:`~dlnest_ray.sweeps.plan.plan_sweep`), the project's layout and
  whether the request could ever run here — so bad input creates nothing. Then it makes the sweep's
  folder in the save root (``S_0001_<timestamp>``, with ``_sweep.json``) and one save package per trial
  in it, the trial's values laid over the config (``args.json`` shows them; the package's metadata has
  them under ``sweep``), and queues the trials as any ``run`` is queued: memory estimated (trials with the
  same memory fingerprint — their varying keys memory-neutral — follow each other's measured peak as
  twins), priority, retries, environment and notices as given. A failure half-way removes what it made.
* ``del S_0001`` (:meth:`SweepOps.del_sweep`) deletes every unfinished trial as ``del`` does a task.
* Early stopping: after each epoch a trial reports (rank 0's epoch report, :meth:`_trial_epoch`), the
  sweep's rule (:mod:`dlnest_ray.sweeps.stopping`) is applied to its trials' curves, read from their
  ``metrics.parquet``. A running trial it stops keeps running to the end of the epoch it is in, saves a
  checkpoint there and ends (``after_all`` runs) — the preemption path — and is then STOPPED with the
  rule's reason; a waiting trial with a curve (preempted or retried before) is STOPPED at once. Its
  memory goes to waiting trials; ``continue`` resumes it like any package.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..checks import checked_retries
from ..errors import DlnestError
from ..runenv import checked_env
from ..savepack import layout
from ..savepack.compare import load_metrics
from ..savepack.create import claim_folder, remove_tree, validate_name
from ..savepack.memory_history import FINGERPRINT_KEY, learned_peak, neutral_keys, package_fingerprint
from ..savepack.package import SavePackage
from ..sweeps.plan import plan_sweep, spec_from_request
from ..sweeps.records import SweepInfo, SweepRecord, SweepStop, SweepTrial
from ..sweeps.stopping import TrialCurve, decide_stops, parse_rule
from ..tasks import TaskRecord, TaskStatus, transition
from .center_submit import SubmitOps

__all__ = ["SWEEP_META_KEY", "SweepOps", "trial_curve"]

log = logging.getLogger(__name__)

SWEEP_META_KEY = "sweep"  # in a trial package's _package.json: {"sweep_id", "trial", "values", "label"}


@functools.lru_cache(maxsize=4096)
def _read_curve(package: str, metric: str, mtime_ns: int, size: int) -> tuple[tuple[float | None, ...], bool]:
    """(the curve, whether the file has rows) of ``metric`` in ``package``'s metrics file as it was at
    ``mtime_ns``/``size`` (the cache key: the file is rewritten whole after every epoch)."""
    try:
        data = load_metrics(Path(package))
    except DlnestError as e:
        log.info("%s: no curve: %s", package, e)
        return (), False
    if data is None or not data.rows:
        return (), False
    if metric not in data.columns:
        return (), True
    points = data.series(metric)
    values: list[float | None] = [None] * (max(e for e, _ in points) + 1)
    for epoch, value in points:
        if epoch >= 0:
            values[epoch] = value
    return tuple(values), True


def trial_curve(record: TaskRecord, metric: str) -> tuple[float | None, ...]:
    """The trial's ``metric`` after each finished epoch (``values[e]``: epoch ``e``, counted from 0 as
    the metrics file does; None where an epoch has no value), read from its package; () when it never
    ran, has no metrics yet, or its file cannot be read."""
    return _curve(record, metric)[0]


def _curve(record: TaskRecord, metric: str) -> tuple[tuple[float | None, ...], bool]:
    if record.started_at is None and not record.resume:
        return (), False
    try:
        st = layout.metrics_path(record.package).stat()
    except OSError:  # no epoch has ended yet
        return (), False
    return _read_curve(record.package, metric, st.st_mtime_ns, st.st_size)


class SweepOps(SubmitOps):
    """Sweeps: create, read, delete, and stop trials early."""

    _told_lacking: set[str]  # sweeps whose trials record no metric of their rule (said once)

    # ------------------------------------------------------------------------------------------ create
    def sweep(
        self,
        config_path: str,
        *,
        freq_path: str = "",
        space: dict[str, Any],
        trials: int | None = None,
        seed: int | None = None,
        name: str = "",
        new_keys: bool = False,
        stop: str = "",
        memory_mb: int | None = None,
        placement: str = "gpu",
        gpus: int | None = None,
        env: dict[str, str] | None = None,
        retries: int | None = None,
        priority: int = 0,
        no_preempt: bool = False,
    ) -> str:
        """Queue a sweep; returns its id (``S_0001``). ``space``: dotted config key → SPEC text (``"0.1,
        0.01"``, ``"range(1,10,2)"``, ``"loguniform(1e-4,1e-1)"``) or a list of values; ``trials``: how
        many to draw (required with a random SPEC); ``seed``: the draws' seed (chosen and recorded when
        None); ``new_keys``: keys absent from the config may be added; ``stop``: an early-stopping rule
        (``median:acc:max@2``, ``asha:acc:max:min=1:eta=3``). The rest as :meth:`run_train`, for every
        trial. Nothing is created unless everything checks (module doc)."""
        spec_kw = self._spec_kw(placement, memory_mb, gpus, priority, no_preempt)
        env = checked_env(env)
        if retries is not None:
            retries = checked_retries(retries)
        if name:
            validate_name(name)
        base = SavePackage(config_path, freq_path)  # parses and merges: errors name the file
        spec = spec_from_request(space, trials=trials, seed=seed, stop=stop, name=name, new_keys=new_keys)
        plan = plan_sweep(spec, base.args)
        save_root = base.check_layout()
        checked = []
        for values in plan.assignments:  # each trial's config: keys, code files, retries, notify settings
            pkg = SavePackage(config_path, freq_path)
            pkg.override(values)
            pkg.check_layout()
            checked.append((pkg, *self._config_settings(retries, pkg.args, env)))
        self._refuse_infeasible(spec_kw)
        with self._lock:
            sweep_id = self.store.new_sweep_id()
        folder = claim_folder(save_root, layout.sweep_folder_prefix(sweep_id, name))
        made: list[tuple[Path, dict[str, Any]]] = []
        learned: dict[str, Any] = {}
        try:
            for i, (pkg, n_retries, notify) in enumerate(checked):
                values, label = plan.assignments[i], plan.labels[i]
                path = pkg.save_to_new_dir(
                    layout.trial_name(i, len(checked)), description=label, parent=folder
                )
                fp = package_fingerprint(path, pkg.args, neutral_keys(pkg.args, config_path))
                meta = {"sweep_id": sweep_id, "trial": i + 1, "values": values, "label": label}
                pkg.update_meta(**{FINGERPRINT_KEY: fp, SWEEP_META_KEY: meta})
                if fp not in learned:  # the sweep's own packages have measured nothing yet
                    learned[fp] = learned_peak(save_root, fp)
                fields = {**spec_kw, "retries": n_retries}
                fields.update(self._memory_choice(fields, fp, learned[fp]))
                made.append((path, {"notify": notify, "sweep_label": label, **fields}))
        except BaseException:
            remove_tree(folder)  # the packages made so far: nothing of a failed sweep stays
            raise
        project = Path(config_path).expanduser().resolve().parent.name
        with self._lock:
            trial_records = []
            for (path, fields), values in zip(made, plan.assignments, strict=True):
                task_id = self._enqueue(
                    path,
                    env=env,
                    name=project,
                    description=fields["sweep_label"],
                    resume=False,
                    ckpt_id=-1,
                    sweep=sweep_id,
                    save=False,
                    **fields,
                )
                trial_records.append(
                    SweepTrial(task_id=task_id, values=values, label=fields["sweep_label"], package=str(path))
                )
            record = SweepRecord(
                sweep_id=sweep_id,
                name=name,
                config_path=str(Path(config_path).expanduser().resolve()),
                freq_path=str(Path(freq_path).expanduser().resolve()) if freq_path else "",
                folder=str(folder),
                spec=plan.spec.to_dict(),
                stop=plan.rule.describe() if plan.rule is not None else "",
                trials=tuple(trial_records),
                varying=plan.varying,
                created_at=self.clock(),
            )
            self.store.sweeps[sweep_id] = record
            self.store.save()
            stop_text = f", stop rule {record.stop}" if record.stop else ""
            self.log.write(f"{sweep_id} queued: {len(trial_records)} trials in {folder}{stop_text}")
        try:
            atomic_write_json(layout.sweep_file(folder), record.to_json())
        except OSError as e:  # the center's record is what counts; the file is for people and `compare`
            self.log.write(f"{sweep_id}: could not write {layout.SWEEP_FILE}: {e}")
        self.schedule()
        return sweep_id

    # ------------------------------------------------------------------------------------------ read
    def _sweep(self, sweep_id: str) -> SweepRecord:
        record = self.store.sweeps.get(sweep_id)
        if record is None:
            known = ", ".join(list(self.store.sweeps)[-5:]) or "none yet"
            raise DlnestError(f"no sweep {sweep_id!r} (sweeps: {known}); `dlnest-ray tasks --all` shows them")
        return record

    def _info(self, record: SweepRecord) -> SweepInfo:
        tasks = tuple(t for i in record.task_ids if (t := self.store.tasks.get(i)) is not None)
        return SweepInfo(record=record, tasks=tasks)

    def get_sweep(self, sweep_id: str) -> SweepInfo:
        """The sweep and its trials' task records now."""
        with self._lock:
            return self._info(self._sweep(sweep_id))

    def get_sweeps(self) -> list[SweepInfo]:
        """Every sweep, oldest first, with its trials' task records."""
        with self._lock:
            return [self._info(r) for r in self.store.sweeps.values()]

    # ------------------------------------------------------------------------------------------ delete
    def del_sweep(self, sweep_id: str) -> str:
        """Delete every unfinished trial (pending: out of the queue; running: stopped, ends CANCELLED)."""
        with self._lock:
            record = self._sweep(sweep_id)
            removed, stopping, ended = 0, 0, 0
            for task_id in record.task_ids:
                task = self.store.tasks.get(task_id)
                if task is None or task.status.is_terminal():
                    ended += 1
                    continue
                if task.cancel_requested:
                    stopping += 1
                    continue
                was_pending = task.status is TaskStatus.PENDING
                self.del_task(task_id)
                removed, stopping = removed + was_pending, stopping + (not was_pending)
            self.log.write(f"{sweep_id} deleted: {removed} removed from the queue, {stopping} stopping")
        return (
            f"{sweep_id}: {removed} trial(s) removed from the queue, {stopping} being stopped, "
            f"{ended} had ended"
        )

    # ------------------------------------------------------------------------------------------ stopping
    def _trial_epoch(self, task_id: str) -> None:
        """A trial (rank 0) has ended an epoch: apply its sweep's stop rule (call without the state lock:
        it reads the trials' metrics files)."""
        with self._lock:
            task = self.store.tasks.get(task_id)
            record = self.store.sweeps.get(task.sweep) if task is not None and task.sweep else None
            if record is None or not record.stop:
                return
            trials = [t for i in record.task_ids if (t := self.store.tasks.get(i)) is not None]
        rule = parse_rule(record.stop)
        curves, lacking = [], []
        for t in trials:
            values, has_rows = _curve(t, rule.metric)
            active = not t.status.is_terminal() and not t.stop_reason and not t.cancel_requested
            curves.append(TrialCurve(trial_id=t.task_id, values=values, active=active))
            if has_rows and not values:
                lacking.append(t.task_id)
        if lacking and not any(c.values for c in curves) and record.sweep_id not in self._told_lacking:
            self._told_lacking.add(record.sweep_id)  # said once: the rule can stop nothing
            self.log.write(
                f"{record.sweep_id}: its trials record no {rule.metric!r} (in metrics.parquet): "
                f"the stop rule {record.stop} cannot judge them"
            )
        decisions = decide_stops(rule, curves)
        if not decisions:
            return
        with self._lock:
            for d in decisions:
                self._stop_trial(record.sweep_id, d.trial_id, d.reason)
            self.store.save()
        self.schedule()  # a waiting trial stopped at once may free a place in the queue's order

    def _stop_trial(self, sweep_id: str, task_id: str, reason: str) -> None:
        """Stop one trial for the sweep's rule (state lock held; the caller saves)."""
        task = self.store.tasks.get(task_id)
        record = self.store.sweeps.get(sweep_id)
        if task is None or record is None or task.status.is_terminal() or task.stop_reason:
            return
        kind = record.stop.split(":", 1)[0]
        self.log.write(f"{task_id} stopped early by {kind} rule: {reason}")
        stops = (*record.stops, SweepStop(task_id=task_id, reason=reason, at=self.clock()))
        self.store.sweeps[sweep_id] = replace(record, stops=stops)
        if task.status is TaskStatus.PENDING:
            stopped = transition(task, TaskStatus.STOPPED, at=self.clock(), error=reason, stop_reason=reason)
            self._set(stopped, save=False)
            return
        self._set(replace(task, stop_reason=reason), save=False)
        if task.status is TaskStatus.RUNNING:  # a PREEMPTED one is stopping already: its end says STOPPED
            try:
                self.launcher.preempt(task_id)
            except Exception as e:  # its supervisor is gone: its end is reported or found on restart
                log.exception("%s: stop failed", task_id)
                self.log.write(f"{task_id}: could not tell it to stop: {e}")
