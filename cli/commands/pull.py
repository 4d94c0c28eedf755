"""`modan-pacs pull`: retrieve indexed instances from a PACS (C-GET, C-MOVE or DICOMweb) into a STORE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)


def pull(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder (from `modan-pacs index --pacs ...`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="STORE folder: STUDY/SERIES/SOP.dcm, plus pull_log.jsonl.")],
    pacs: Annotated[
        Optional[str], typer.Option("--pacs", help="PACS as HOST:PORT (default: from the index's location column).")
    ] = None,
    called_aet: Annotated[
        Optional[str], typer.Option("--called-aet", help="AE title of the PACS (default: from the index's location).")
    ] = None,
    calling_aet: Annotated[
        str,
        typer.Option("--calling-aet", help="Our AE title; the PACS must know it (and, for C-MOVE, where it listens)."),
    ] = "MODANPACS",
    method: Annotated[str, typer.Option("--method", help="get (C-GET) or move (C-MOVE to our storage SCP).")] = "get",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Who speaks DIMSE for --method get: pynetdicom, or dcmtk (getscu processes, bit-preserving; "
            "needs dcmtk installed; about 3x faster per association, see docs/benchmarks/pull.md).",
        ),
    ] = "pynetdicom",
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Parallel associations (or HTTP sessions, or getscu processes).")
    ] = 1,
    select: Annotated[
        Optional[str],
        typer.Option("--select", help='Selection on the index labels, e.g. "per-label 100" (series per label pair).'),
    ] = None,
    modality: Annotated[
        Optional[list[str]], typer.Option("--modality", help="Only rows with this modality label (repeatable).")
    ] = None,
    anatomy: Annotated[
        Optional[list[str]], typer.Option("--anatomy", help="Only rows with this anatomy label (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-label series draw.")] = 0,
    chunk: Annotated[
        int,
        typer.Option(
            "--chunk",
            help="At most this many instances per C-GET/C-MOVE request listing instances "
            "(a series selected whole is asked for in one series-level request).",
        ),
    ] = 50,
    move_port: Annotated[
        int, typer.Option("--move-port", help="Port of our storage SCP for --method move (the PACS must know it).")
    ] = 11113,
    dicomweb: Annotated[
        Optional[str],
        typer.Option(
            "--dicomweb",
            help="Retrieve by WADO-RS from this DICOMweb URL instead of DIMSE "
            "(credentials: $MODAN_PACS_DICOMWEB_USER / $MODAN_PACS_DICOMWEB_PASSWORD or --dicomweb-credentials).",
        ),
    ] = None,
    dicomweb_credentials: Annotated[
        Optional[Path], typer.Option("--dicomweb-credentials", help="File whose first line is user:password.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each answer of the PACS (DIMSE) before giving up.")
    ] = 15.0,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="TCP connect and association timeout, seconds.")
    ] = 10.0,
    retries: Annotated[
        int, typer.Option("--retries", help="Retries of a failed connection (exponential backoff).")
    ] = 2,
    backoff: Annotated[float, typer.Option("--backoff", help="First backoff in seconds; doubles on each retry.")] = 0.5,
    complete_labels: Annotated[
        bool,
        typer.Option(
            "--complete-labels",
            help="After the pull, replace the index's header attributes by those "
            "of the pulled files and relabel (for a PACS whose C-FIND answers lack attributes).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print what would be fetched (instances, bytes, studies, requests); fetch nothing."
        ),
    ] = False,
) -> None:
    """Retrieve the selected instances of an index into OUT; re-running resumes (received instances are skipped)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modan_pacs.pacs.pull import make_pull_settings, pacs_for_index, raise_if_incomplete, summary_line
    from modan_pacs.pacs.pull import pull as run_pull

    console = Console()
    settings = make_pull_settings(
        method=method,
        engine=engine,
        workers=workers,
        select=select,
        modalities=modality or (),
        anatomies=anatomy or (),
        seed=seed,
        chunk=chunk,
        move_port=move_port,
        dicomweb=dicomweb,
        dicomweb_credentials=dicomweb_credentials,
        dry_run=dry_run,
    )
    if dry_run:
        from modan_pacs.pacs.pull import plan_lines

        run_pull(
            index, out, settings, on_plan=lambda plan: console.print("\n".join(plan_lines(plan, out)), highlight=False)
        )
        return
    pacs_settings = None
    if settings.method != "dicomweb":
        from modan_pacs.cli.network import network_settings

        network = network_settings(connect_timeout=connect_timeout, timeout=timeout, retries=retries, backoff=backoff)
        pacs_settings = pacs_for_index(index, address=pacs, called_aet=called_aet, calling_aet=calling_aet, **network)
    with Progress(
        TextColumn("[bold]pulling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("pull", total=None, rate="")
        totals = {"n": 0, "bytes": 0}

        def on_plan(plan) -> None:
            bar.update(task, total=plan.to_fetch)
            if plan.skipped:
                console.print(f"{plan.skipped} instance(s) already in {out}: skipped")

        def on_progress(n: int, nbytes: int) -> None:
            totals["n"] += n
            totals["bytes"] += nbytes
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = (
                f"{totals['n'] / elapsed:,.1f} inst/s  {totals['bytes'] / 1e6 / elapsed:,.1f} MB/s"
                if elapsed > 0
                else ""
            )
            bar.update(task, advance=n, rate=rate)

        summary = run_pull(index, out, settings, pacs=pacs_settings, on_progress=on_progress, on_plan=on_plan)
    console.print(summary_line(summary, out), highlight=False)
    if complete_labels:
        from modan_pacs.pacs.complete import complete_labels as complete

        done = complete(index, out)
        console.print(
            f"labels completed from {done.completed:,} pulled files' headers: "
            f"{done.relabelled:,} of {done.rows:,} rows relabelled, "
            f"{done.no_pixel_data:,} without pixel data moved to the errors, {done.unreadable:,} unreadable; "
            f"rewrote {index}",
            highlight=False,
        )
    raise_if_incomplete(summary, out)
