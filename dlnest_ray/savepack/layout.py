"""Where everything lives inside a save package: the one place that knows its file and folder names.

Pure: builds paths with :mod:`pathlib` and parses names; never touches the disk. Every ``package``
argument is the package's root folder (a ``str`` or a ``Path``; a relative one stays relative).

```
<save_root>/<YYYY-mm-dd_HH-MM-SS_xxx | description | NOSAVE_YYYY-...>/   NOSAVE_PREFIX
  Model/… Dataset/… LifeCycle.py …  the code as copied (paths as in the config)
  args.json                       ARGS_FILE: the merged config
  _package.json                   MANIFEST_FILE: tracks, checkpoint records, metadata, run segments
  Checkpoints/state_<id>.ckpt     CKPT_DIR, ckpt_name(): prefix "state_" unless the manifest names another
  _output.txt                     output_name(): a single-process run's console output
  _output_<rank>.txt              output_name(rank): one per DDP rank
  _analyze_output.txt             ANALYZE_OUTPUT_FILE: every analyzer's lines, each marked with its task
  metrics.parquet                 METRICS_FILE: one row per finished epoch
  tb/ and tb/steps/               TB_DIR, TB_STEPS_DIR: TensorBoard events (epochs; the plugin's steps)
  _configs/ (_configs/_external/) CONFIGS_DIR: the config files as given
  AnalyzeScripts/                 SCRIPTS_DIR: the project's analysis scripts, copied
  .dlnest_run/<task>.stop         RUN_DIR, stop_file(): a queued run's stop request
  .dlnest_run/<task>.rank<r>.pgid pid_file(): a rank's process group, for the supervisor's kill
  .<name>.tmp-<random>            TEMP_GLOB: a file being written (dlnest_ray.atomic names them)
```

A sweep (issue 15) keeps its trials' packages in one folder of the save root, beside other packages:

```
<save_root>/S_0001_[<name>_]<YYYY-mm-dd_HH-MM-SS_xxx>/   sweep_folder_prefix()
  _sweep.json                     SWEEP_FILE: the sweep (id, spec, seed, stop rule, trials and values)
  trial_01/ trial_02/ …           trial_name(): one save package per trial
```

These names are a file format shared with DLNest and with older dlnest-ray: they are only ever added
to, never renamed.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

__all__ = [
    "ANALYZE_OUTPUT_FILE",
    "ARGS_FILE",
    "CKPT_DIR",
    "CKPT_PREFIX",
    "CKPT_SUFFIX",
    "CONFIGS_DIR",
    "CONFIGS_EXTERNAL_DIR",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "NOSAVE_PREFIX",
    "OUTPUT_FILE",
    "RUN_DIR",
    "SCRIPTS_DIR",
    "SWEEP_FILE",
    "TB_DIR",
    "TB_STEPS_DIR",
    "TEMP_GLOB",
    "analyze_output_path",
    "args_path",
    "ckpt_dir",
    "ckpt_glob",
    "ckpt_name",
    "ckpt_path",
    "config_copy",
    "configs_dir",
    "external_config_copy",
    "is_output_name",
    "is_reserved",
    "manifest_path",
    "metrics_path",
    "output_name",
    "output_path",
    "parse_ckpt_name",
    "parse_pid_record",
    "pid_file",
    "pid_record",
    "preempt_file",
    "run_dir",
    "scripts_dir",
    "stop_file",
    "sweep_file",
    "sweep_folder_prefix",
    "tb_dir",
    "tb_steps_dir",
    "trial_name",
]

NOSAVE_PREFIX = "NOSAVE_"  # the package folder's own name with --no-save: NOSAVE_<timestamp>
ARGS_FILE = "args.json"
MANIFEST_FILE = "_package.json"
CKPT_DIR = "Checkpoints"
CKPT_PREFIX = "state_"  # DLNest's; a manifest may name another (its "prefix" key)
CKPT_SUFFIX = ".ckpt"
OUTPUT_FILE = "_output.txt"
ANALYZE_OUTPUT_FILE = "_analyze_output.txt"
METRICS_FILE = "metrics.parquet"
TB_DIR = "tb"
TB_STEPS_DIR = "steps"  # under TB_DIR: the AutoTensorboardScalar plugin's per-step scalars
CONFIGS_DIR = "_configs"
CONFIGS_EXTERNAL_DIR = "_external"  # under CONFIGS_DIR: config files from outside the project folder
SCRIPTS_DIR = "AnalyzeScripts"
RUN_DIR = ".dlnest_run"  # per-task stop requests and rank process groups
SWEEP_FILE = "_sweep.json"  # in a sweep's folder: the sweep, for people and offline `compare`
TEMP_GLOB = ".*.tmp-*"  # dlnest_ray.atomic.temp_path: ".<name>.tmp-<hex>", beside the file it replaces

_CKPT_RE = re.compile(r"^(?P<prefix>.*?)(?P<id>\d+)\.ckpt$")
_OUTPUT_RE = re.compile(r"^_output(?:_(?P<rank>\d+))?\.txt$")

Where = str | Path


# ------------------------------------------------------------------------------------------- top level
def args_path(package: Where) -> Path:
    return Path(package) / ARGS_FILE


def manifest_path(package: Where) -> Path:
    return Path(package) / MANIFEST_FILE


def metrics_path(package: Where) -> Path:
    return Path(package) / METRICS_FILE


def analyze_output_path(package: Where) -> Path:
    return Path(package) / ANALYZE_OUTPUT_FILE


def scripts_dir(package: Where) -> Path:
    """``AnalyzeScripts/`` of a package, or of a project folder (the same name in both)."""
    return Path(package) / SCRIPTS_DIR


def tb_dir(package: Where) -> Path:
    return Path(package) / TB_DIR


def tb_steps_dir(package: Where) -> Path:
    return Path(package) / TB_DIR / TB_STEPS_DIR


# ------------------------------------------------------------------------------------------- checkpoints
def ckpt_dir(package: Where) -> Path:
    return Path(package) / CKPT_DIR


def ckpt_name(ckpt_id: int, prefix: str = CKPT_PREFIX) -> str:
    """``state_<id>.ckpt`` (DLNest's ``<prefix><id>.ckpt``)."""
    return f"{prefix}{ckpt_id}{CKPT_SUFFIX}"


def ckpt_path(package: Where, ckpt_id: int, prefix: str = CKPT_PREFIX) -> Path:
    return ckpt_dir(package) / ckpt_name(ckpt_id, prefix)


def ckpt_glob(prefix: str = CKPT_PREFIX) -> str:
    """A glob for checkpoint files of ``prefix`` (every checkpoint file when ``prefix`` is ``""``);
    :func:`parse_ckpt_name` tells which matches are really ours."""
    return f"{prefix}*{CKPT_SUFFIX}"


def parse_ckpt_name(name: str) -> tuple[str, int] | None:
    """``(prefix, id)`` of a checkpoint file name, as DLNest reads it (the id is the trailing digits);
    None for anything else. ``state_12.ckpt`` → ``("state_", 12)``."""
    m = _CKPT_RE.match(name)
    return (m["prefix"], int(m["id"])) if m else None


# ------------------------------------------------------------------------------------------- output
def output_name(rank: int | None = None) -> str:
    """``_output.txt`` for one process (``rank`` None or negative, DLNest's -1), else
    ``_output_<rank>.txt``."""
    return OUTPUT_FILE if rank is None or rank < 0 else f"_output_{rank}.txt"


def output_path(package: Where, rank: int | None = None) -> Path:
    return Path(package) / output_name(rank)


def is_output_name(name: str) -> bool:
    """Whether ``name`` is a run's output file: ``_output.txt`` or ``_output_<rank>.txt``."""
    return _OUTPUT_RE.match(name) is not None


# ------------------------------------------------------------------------------------------- configs
def configs_dir(package: Where) -> Path:
    return Path(package) / CONFIGS_DIR


def config_copy(relative: PurePath) -> PurePath:
    """Where a config file at ``relative`` (to the root config's folder) is copied, package-relative."""
    return PurePath(CONFIGS_DIR) / relative


def external_config_copy(index: int, name: str) -> PurePath:
    """Where the ``index``-th config file, from outside the project folder, is copied (package-relative)."""
    return PurePath(CONFIGS_DIR) / CONFIGS_EXTERNAL_DIR / f"{index}-{name}"


# ------------------------------------------------------------------------------------------- run control
def run_dir(package: Where) -> Path:
    return Path(package) / RUN_DIR


def stop_file(package: Where, task_id: str) -> Path:
    """The file whose existence asks queued task ``task_id``'s ranks to stop (``dlnest-ray del``)."""
    return run_dir(package) / f"{task_id}.stop"


def preempt_file(package: Where, task_id: str) -> Path:
    """The file whose existence preempts task ``task_id``: its ranks stop at the end of the epoch they
    are in, after a checkpoint of it."""
    return run_dir(package) / f"{task_id}.preempt"


def pid_file(package: Where, task_id: str, rank: int) -> Path:
    """Where rank ``rank`` of task ``task_id`` records its process group id, for the supervisor's kill."""
    return run_dir(package) / f"{task_id}.rank{rank}.pgid"


def pid_record(pgid: int, node: str) -> str:
    """The text of a :func:`pid_file`: ``"<pgid> <node>"`` (the node's short name; may be empty)."""
    return f"{pgid} {node}".rstrip()


def parse_pid_record(text: str) -> tuple[int, str]:
    """``(pgid, node)`` from a :func:`pid_file`'s text; node is "" when the file names none (as files
    written before nodes were recorded). A :class:`ValueError` when the text is not such a record."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"not a process group record: {text[:40]!r}")
    return int(parts[0]), parts[1] if len(parts) == 2 else ""


# ------------------------------------------------------------------------------------------- names
_RESERVED = frozenset(
    {
        ARGS_FILE,
        MANIFEST_FILE,
        CKPT_DIR,
        OUTPUT_FILE,
        ANALYZE_OUTPUT_FILE,
        METRICS_FILE,
        TB_DIR,
        CONFIGS_DIR,
        SCRIPTS_DIR,
        RUN_DIR,
    }
)


def is_reserved(name: str) -> bool:
    """Whether a file of this name at the package root is one dlnest-ray reads or writes itself (so a
    marker file of that name would be mistaken for it)."""
    return name in _RESERVED or is_output_name(name)


def sweep_folder_prefix(sweep_id: str, name: str = "") -> str:
    """The start of a sweep's folder name, a timestamp follows: ``S_0001_`` or ``S_0001_<name>_``."""
    return f"{sweep_id}_{name}_" if name else f"{sweep_id}_"


def sweep_file(folder: Where) -> Path:
    return Path(folder) / SWEEP_FILE


def trial_name(index: int, count: int) -> str:
    """The package folder of trial ``index`` (from 0) of ``count``: ``trial_01``... (1-based, padded so
    they sort in trial order)."""
    return f"trial_{index + 1:0{max(2, len(str(count)))}d}"


def output_prefix(task_id: str, submitted_at: float) -> str:
    """How an analyzer's lines are marked in ``_analyze_output.txt``: ``[A_0003 mi8q3xk2] ``, the task id
    and its submission time (ms, base 36). Ids are unique per center home only; the stamp keeps apart
    analyzers of two homes (two clusters on shared storage, or a home started afresh) on one package."""
    n, digits = max(0, round(submitted_at * 1000)), ""
    while True:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not n:
            return f"[{task_id} {digits}] "
