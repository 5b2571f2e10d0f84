"""Foreground commands (DLNest.Run and DLNest.Analyze): ``train`` and ``analyze`` in this process."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated

import typer

from ..errors import AnalysisError, DlnestError
from .options import DescOpt, FreqOpt, NameByDescOpt, NoSaveOpt

__all__ = ["analyze_once", "kept_text", "parse_gpus", "train"]


def kept_text(ids: list[int]) -> str:
    """``no checkpoint kept``, ``1 checkpoint kept (id 3)``, ``3 checkpoints kept (ids 0, 3, 4)``."""
    if not ids:
        return "no checkpoint kept"
    if len(ids) == 1:
        return f"1 checkpoint kept (id {ids[0]})"
    return f"{len(ids)} checkpoints kept (ids {', '.join(map(str, ids))})"


def parse_gpus(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        gpus = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise DlnestError(f"--gpu takes GPU indices like 0 or 0,1; got {value!r}") from None
    if not gpus or min(gpus) < 0:
        raise DlnestError(f"--gpu takes GPU indices like 0 or 0,1; got {value!r}")
    return gpus


def train(
    config: Annotated[
        Path | None,
        typer.Argument(metavar="CONFIG", help="The project's root_config.json (omit with --resume)."),
    ] = None,
    freq: FreqOpt = None,
    desc: DescOpt = "",
    no_save: NoSaveOpt = False,
    name_by_desc: NameByDescOpt = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when a GPU is present.")] = False,
    gpu: Annotated[
        str | None, typer.Option("--gpu", metavar="INDEX", help="GPU index, or several: 0,1.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", "-r", metavar="PACKAGE", help="Continue this save package.")
    ] = None,
    ckpt: Annotated[
        int, typer.Option("--ckpt", "-c", help="With --resume: checkpoint id (-1: latest valid).")
    ] = -1,
) -> None:
    """Train in the foreground: create the save package (code snapshot, args.json), train, print its path.

    With --resume PACKAGE, continue a package from its latest valid checkpoint (or --ckpt ID) at the next
    epoch, with model, optimizer, schedulers, RNG states and the log restored; output is appended.
    """
    from ..runtime.trainer import TrainOptions
    from ..runtime.trainer import train as run_training
    from ..savepack.package import SavePackage
    from .display import ForegroundDisplay

    gpus = parse_gpus(gpu)
    if cpu and gpus:
        raise DlnestError("--cpu and --gpu exclude each other")
    if resume is not None:
        if config is not None or freq is not None or no_save or name_by_desc:
            raise DlnestError(
                "--resume continues an existing package: give no CONFIG, --freq, --no-save or --name-by-desc"
            )
        opened = SavePackage.open(resume)
        path = opened.path
        if not desc:  # a continuation keeps the run's description
            from ..savepack.facts import package_description

            desc = package_description(opened.meta)
    else:
        if config is None:
            raise DlnestError("give the project's root_config.json (or --resume PACKAGE)")
        if name_by_desc and not desc:
            raise DlnestError("--name-by-desc needs --desc NAME")
        pkg = SavePackage(config, freq or "")
        path = pkg.save_to_new_dir(desc if name_by_desc else "", no_save=no_save, description=desc)
        typer.echo(f"package: {path}")
    assert path is not None
    with ForegroundDisplay() as display:
        result = run_training(
            path,
            TrainOptions(
                resume=resume is not None,
                ckpt_id=ckpt,
                cpu=cpu,
                gpus=gpus,
                console=display,
                observer=display,
                description=desc,
            ),
        )
    kept = SavePackage.open(path).checkpoint_ids()
    epochs = result.finished_epoch + 1
    typer.echo(
        f"finished epoch {result.finished_epoch} ({epochs} epoch{'' if epochs == 1 else 's'} in all, "
        f"{result.global_step} steps); {kept_text(kept)}"
    )
    typer.echo(f"package: {path}")


def analyze_once(package: Path, script: Path, *, scripts_dir: Path | None, ckpt: int, cpu: bool) -> None:
    """Load a package (its copied code, args, dataset, model and log from a checkpoint) in this process
    and run experience(self) from ``script`` once (DLNest.Analyze). ``script`` is a path, or a name in
    ``scripts_dir`` (default: the project's AnalyzeScripts/, else the package's copy)."""
    from ..runtime.analysis import Analyzer, resolve_script
    from ..runtime.loader import load_script
    from ..savepack.facts import find_scripts_dir
    from ..savepack.package import SavePackage

    path = resolve_script(script, None)
    if scripts_dir is not None or (not path.exists() and len(script.parts) == 1):
        pkg = SavePackage.open(package)  # a bare name: look in the scripts folder
        assert pkg.path is not None
        try:
            path = resolve_script(script, find_scripts_dir(pkg.path, pkg.meta, scripts_dir))
        except AnalysisError:
            if scripts_dir is not None:
                raise
    fn = load_script(path)
    try:
        analyzer = Analyzer(package, ckpt_id=ckpt, cpu=cpu)
    except DlnestError:
        raise
    except Exception as e:
        traceback.print_exc()
        raise AnalysisError(f"loading {package} failed: {type(e).__name__}: {e}") from e
    try:
        result = analyzer.run(fn)
    except Exception as e:
        traceback.print_exc()
        raise AnalysisError(f"{script} raised {type(e).__name__}: {e}") from e
    if result is not None:
        typer.echo(f"result: {result!r}")
