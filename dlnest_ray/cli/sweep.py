"""``dlnest-ray sweep CONFIG KEY=SPEC...``: a search space queued as one unit (issue 15).

Everything is checked here before the cluster is asked — the SPECs, the sweep file, the trial count, the
stop rule, every key against the merged config — so a mistake is one line and nothing is created; the
center checks it all again (it is what a Python caller reaches) and creates the trials. Only the config
files are read here (no torch, no Ray until the request is sent).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cluster import connect_client
from .options import AddressOpt, FreqOpt, JsonOpt
from .queue import QueueOptions, queue_options

if TYPE_CHECKING:
    from ..sweeps.records import SweepInfo

__all__ = ["SWEEP_HELP", "sweep"]

SWEEP_HELP = r"""Queue a sweep: one training run (trial) per point of a search space, as one unit S_0001.

Each KEY=SPEC sets a dotted config key (model_config.lr) to the values SPEC names:

  a,b,c            choices: JSON values (1, 1e-4, true, \[1,2]) or strings
  range(1,10,2)    Python's range, stop exclusive (floats too: range(0,1,.25))
  uniform(a,b)     floats drawn uniformly from a to b
  loguniform(a,b)  floats whose log is uniform, 0 < a < b
  randint(a,b)     integers drawn from a to b, both ends included

With choices and ranges only, every combination runs (the grid; --trials N draws N of them). With a drawn SPEC, --trials N trials are drawn with --seed S: the same trials every time (without --seed one is chosen and printed). --file sweep.json holds the same as JSON ({"space": {KEY: SPEC or \[values]}, "trials", "seed", "stop", "name", "new_keys"}); KEY=SPEC items are added to its space.

Each trial is an ordinary queued run with its own save package (all in one folder of the save root, with _sweep.json) and its values in args.json, packed onto GPUs by memory like any run. --stop RULE stops bad trials early, at the end of the epoch they are in (STOPPED; `continue` resumes one):

  median:METRIC:max|min\[@START]
      from epoch START on, stop a trial whose best METRIC so far is worse
      than the median of the other trials' running means
  asha:METRIC:max|min\[:min=R]\[:eta=E]\[:max=T]
      successive halving: at epochs R, R·E, R·E²... keep the top 1/E

Examples:

  dlnest-ray sweep root_config.json model_config.lr=0.1,0.01 \
      dataset_config.batch_size=32,64

  dlnest-ray sweep root_config.json 'model_config.lr=loguniform(1e-4,.1)' \
      --trials 8 --seed 1 --stop median:acc:max@2 -m 4000

`tasks` lists a sweep's trials under its id, `compare S_0001` ranks them, `del S_0001` stops them all.
"""  # noqa: E501  (a paragraph per line: the help formatter wraps them to the terminal)

TrialsOpt = Annotated[
    int | None,
    typer.Option(
        "--trials", metavar="N", help="Draw N trials (needed with a drawn SPEC).", show_default=False
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed", metavar="S", help="Seed of the draws (default: chosen, printed).", show_default=False
    ),
]
NameOpt = Annotated[
    str | None, typer.Option("--name", metavar="NAME", help="A name for the sweep (in its folder's name).")
]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file", metavar="sweep.json", help="A sweep file (JSON): space, trials, seed, stop, name."
    ),
]
NewKeysOpt = Annotated[
    bool, typer.Option("--new-keys", help="Allow keys the config does not have (they are added).")
]
StopOpt = Annotated[
    str | None,
    typer.Option(
        "--stop", metavar="RULE", help=r"Early stopping: median:METRIC:max|min\[@START] or asha:... (above)."
    ),
]


@queue_options
def sweep(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The project's root_config.json.")],
    items: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=SPEC...", help="Dotted config keys and their values.", show_default=False
        ),
    ] = None,
    freq: FreqOpt = None,
    trials: TrialsOpt = None,
    seed: SeedOpt = None,
    name: NameOpt = None,
    file: FileOpt = None,
    new_keys: NewKeysOpt = False,
    stop: StopOpt = None,
    **options: Any,
) -> None:
    # the help text is SWEEP_HELP (set below): it shows the SPEC grammar with examples
    from ..config import load_config
    from ..sweeps.plan import plan_sweep
    from ..sweeps.space import SweepError, load_sweep_file, merge_cli, parse_assignments

    queue = QueueOptions(**options)
    request = queue.request()
    config_path = config.expanduser().resolve()
    freq_path = freq.expanduser().resolve() if freq else None
    file_spec = None
    if file is not None:
        try:
            text = file.expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise SweepError(f"cannot read the sweep file {file}: {e.strerror or e}") from None
        file_spec = load_sweep_file(text, source=str(file))
    spec = merge_cli(
        file_spec,
        parse_assignments(items or []),
        trials=trials,
        seed=seed,
        stop=stop,
        name=name,
        new_keys=new_keys,
        source=str(file),
    )
    if spec.samples and spec.seed is None:  # chosen here, so what is printed is what the center draws
        from dataclasses import replace

        spec = replace(spec, seed=random.SystemRandom().randrange(2**31))
    args = load_config(config_path, freq_path).args  # errors name the file
    plan = plan_sweep(spec, args)  # every check the center makes on the space, before connecting
    data = plan.spec.to_dict()
    client = connect_client(queue.address, create=True)
    sweep_id = client.sweep(
        str(config_path),
        freq_path=str(freq_path or ""),
        space=data["space"],
        trials=data["trials"],
        seed=data["seed"],
        stop=data["stop"] or "",
        name=data["name"] or "",
        new_keys=bool(data["new_keys"]),
        **request,
    )
    _report(client.get_sweep(sweep_id), queue.as_json)


sweep.__doc__ = SWEEP_HELP


def _report(info: SweepInfo, as_json: bool) -> None:
    """What ``sweep`` prints: its id, trial count, seed and stop rule, then one line per trial (task id,
    varying values, status or why it waits). ``--json``: ``sweep_id``, ``trials`` (``task_id``,
    ``values``, ``package``), ``seed``, ``stop``, ``folder``."""
    from rich.markup import escape
    from rich.table import Table

    from .tables import console, print_json

    rec = info.record
    if as_json:
        print_json(
            {
                "sweep_id": rec.sweep_id,
                "trials": [
                    {"task_id": t.task_id, "values": t.values, "package": t.package} for t in rec.trials
                ],
                "seed": rec.seed,
                "stop": rec.stop or None,
                "folder": rec.folder,
            }
        )
        return
    typer.echo(f"sweep: {rec.sweep_id} ({len(rec.trials)} trials)" + (f" {rec.name}" if rec.name else ""))
    typer.echo(f"folder: {rec.folder}")
    if rec.seed is not None:
        typer.echo(f"seed: {rec.seed}")
    if rec.stop:
        typer.echo(f"stop rule: {rec.stop}")
    rows = {t.task_id: t for t in info.tasks}
    table = Table(title=None, show_header=True)
    for column in ("trial", "values", "status"):
        table.add_column(column, overflow="fold")
    for trial in rec.trials:
        task = rows.get(trial.task_id)
        state = "-" if task is None else str(task.status)
        if task is not None and task.wait_reason:
            state += f": {task.wait_reason}"
        table.add_row(trial.task_id, escape(trial.label), escape(state))
    console().print(table)


def sweeps(as_json: JsonOpt = False, address: AddressOpt = None) -> None:
    """List the sweeps, oldest first: id, name, trials by status, stop rule, when queued, folder.

    `compare S_0001` ranks a sweep's trials; `del S_0001` stops its unfinished ones.

    --json: one object per sweep (sweep_id, name, trials, counts, done, stop, created_at, folder).
    """
    import time

    from rich.markup import escape
    from rich.table import Table

    from .tables import console, print_json

    infos = connect_client(address, create=False).get_sweeps()
    if as_json:
        print_json(
            [
                {
                    "sweep_id": info.record.sweep_id,
                    "name": info.record.name,
                    "trials": len(info.record.trials),
                    "counts": info.counts(),
                    "done": info.done,
                    "stop": info.record.stop or None,
                    "created_at": info.record.created_at,
                    "folder": info.record.folder,
                }
                for info in infos
            ]
        )
        return
    if not infos:
        typer.echo("no sweeps (`dlnest-ray sweep CONFIG KEY=SPEC...` queues one)")
        return
    table = Table(title="Sweeps", show_header=True)
    for column in ("sweep", "name", "trials", "status", "stop rule", "queued", "folder"):
        table.add_column(column, overflow="fold")
    for info in infos:
        rec = info.record
        status = ", ".join(f"{n} {status.lower()}" for status, n in info.counts().items())
        queued = time.strftime("%m-%d %H:%M", time.localtime(rec.created_at))
        table.add_row(
            rec.sweep_id,
            escape(rec.name or "-"),
            str(len(rec.trials)),
            status or "-",
            escape(rec.stop or "-"),
            queued,
            escape(rec.folder),
        )
    console().print(table)
