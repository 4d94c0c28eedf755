"""`modan-pacs index`: an export folder (or a live PACS) -> a labelled, PHI-free index folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("index")(index)


def index(
    path: Annotated[
        Optional[Path],
        typer.Argument(
            help="Export folder to index (DICOMDIR trees and loose files, any names, nested). Omit with --pacs."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder to write (re-running updates it).")] = Path(
        "index"
    ),
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers", "-w", help="Header-reading processes (default: CPU count); 1 = read in this process."
        ),
    ] = None,
    vocab: Annotated[
        Optional[Path],
        typer.Option("--vocab", help="Label vocabulary YAML (default: the shipped configs/vocabulary.yaml)."),
    ] = None,
    salt_file: Annotated[
        Optional[Path],
        typer.Option(
            "--salt-file",
            help="PatientID-hash salt, kept outside the index "
            "(default $MODAN_PACS_SALT_FILE or ~/.config/modan-pacs/salt; created 0600 if absent).",
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Files per resumable part file (0 = automatic).")] = 0,
    file_timeout: Annotated[
        float,
        typer.Option(
            "--file-timeout",
            help="Seconds one file's header may take before it is recorded as "
            "a timeout error and skipped (0 = no limit).",
        ),
    ] = 60.0,
    pacs: Annotated[
        Optional[str], typer.Option("--pacs", help="Index a live PACS by C-FIND instead of a folder: HOST:PORT.")
    ] = None,
    called_aet: Annotated[str, typer.Option("--called-aet", help="AE title of the PACS (with --pacs).")] = "ANY-SCP",
    calling_aet: Annotated[str, typer.Option("--calling-aet", help="Our AE title (with --pacs).")] = "MODANPACS",
    level: Annotated[str, typer.Option("--level", help="C-FIND level with --pacs: study, series or image.")] = "series",
    modality: Annotated[
        Optional[str], typer.Option("--modality", help="Only this modality (with --pacs), e.g. CT.")
    ] = None,
    date_from: Annotated[
        Optional[str], typer.Option("--date-from", help="Studies from this date, YYYYMMDD (with --pacs).")
    ] = None,
    date_to: Annotated[
        Optional[str], typer.Option("--date-to", help="Studies up to this date, YYYYMMDD (with --pacs).")
    ] = None,
    filters: Annotated[
        Optional[list[str]],
        typer.Option(
            "--filter",
            help="With --pacs: a C-FIND matching key KEY=VALUE (repeatable), as findscu's -k, "
            "e.g. StudyDescription=*KNEE*, AccessionNumber=A123, StationName=CT01.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --pacs: seconds to wait for each answer of the PACS (DIMSE).")
    ] = 15.0,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="With --pacs: TCP connect and association timeout, seconds.")
    ] = 10.0,
    retries: Annotated[int, typer.Option("--retries", help="With --pacs: retries of a failed connection.")] = 2,
    backoff: Annotated[
        float, typer.Option("--backoff", help="With --pacs: first backoff in seconds; doubles on each retry.")
    ] = 0.5,
) -> None:
    """Read DICOM headers (never pixels) into OUT: index.parquet, labels.npy, errors.parquet, series, summaries."""
    from rich.console import Console

    from modan_pacs.errors import InputError
    from modan_pacs.labels import Vocabulary

    console = Console()
    if (path is None) == (pacs is None):
        raise InputError(
            "give either PATH (an export folder) or --pacs HOST:PORT, not both"
            if path is not None
            else "give PATH (an export folder) or --pacs HOST:PORT"
        )
    vocabulary = Vocabulary.load(vocab)
    if pacs is not None:
        from modan_pacs.cli.network import network_settings

        from modan_pacs.pacs.association import make_settings, parse_address
        from modan_pacs.pacs.query import make_query

        host, port = parse_address(pacs)
        network = network_settings(connect_timeout=connect_timeout, timeout=timeout, retries=retries, backoff=backoff)
        settings = make_settings(host=host, port=port, called_aet=called_aet, calling_aet=calling_aet, **network)
        query = make_query(
            level=level, modalities=modality or (), date_from=date_from, date_to=date_to, filters=filters or ()
        )
        tables = _index_pacs(settings, query, out, vocabulary, salt_file, console)
        _print_summary(console, tables, out, header=f"PACS {pacs}")
        _print_missing_attributes(console, tables.frame)
        return

    from modan_pacs.cli.bars import progress_bar
    from rich.progress import TextColumn

    from modan_pacs.ingest import build_index

    if not path.exists():
        raise InputError(f"PATH {path} does not exist")

    with progress_bar(console, label="[bold]reading headers", extra=(TextColumn("{task.fields[rate]}"),)) as bar:
        task = bar.add_task("index", total=None, rate="")

        def on_progress(done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.0f} files/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        report = build_index(
            path,
            out,
            vocabulary=vocabulary,
            workers=workers,
            salt_file=salt_file,
            chunk_size=chunk_size,
            file_timeout=file_timeout or None,
            progress=on_progress,
        )
    console.print(
        f"{report.n_files:,} files: {report.n_read:,} read, {report.n_unchanged:,} unchanged since the last run, "
        f"{report.seconds:.1f} s"
    )
    _print_summary(console, report.tables, report.out_dir, header=str(path))


def _index_pacs(settings, query, out, vocabulary, salt_file, console):
    from rich.progress import Progress

    from modan_pacs.pacs.query import build_pacs_index

    with Progress(console=console, transient=True) as bar:  # query slices (date window x modality) done
        tasks: dict[str, int] = {}

        def on_progress(done: int, total: int, description: str) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        return build_pacs_index(
            settings, query, out_dir=out, vocabulary=vocabulary, salt_file=salt_file, progress=on_progress
        )


def _print_missing_attributes(console, frame) -> None:
    """How many rows the PACS's C-FIND answers left without each attribute the labels use."""
    from modan_pacs.pacs.query import missing_label_attributes

    missing = {key: n for key, n in missing_label_attributes(frame).items() if n}
    if not missing:
        return
    parts = ", ".join(f"{key} {n:,}" for key, n in missing.items())
    console.print(
        f"C-FIND answers lacked, of {len(frame):,} rows: {parts}. Labels use what there is; after a pull, "
        "`modan-pacs pull ... --complete-labels` relabels from the files' headers.",
        highlight=False,
    )


def _print_summary(console, tables, out_dir, *, header: str) -> None:
    """One screen: modality x anatomy counts, errors by reason, top unmapped values."""
    import pandas as pd
    from rich.table import Table

    frame = tables.frame if hasattr(tables, "frame") else tables
    errors = getattr(tables, "errors", pd.DataFrame(columns=["reason"]))
    mod = frame["modality_label"].fillna("unknown")
    ana = frame["anatomy_label"].fillna("unknown")
    cross = pd.crosstab(ana, mod)
    grid = Table(title=f"{len(frame):,} images indexed from {header}", show_lines=False)
    grid.add_column("anatomy \\ modality", style="bold")
    for column in cross.columns:
        grid.add_column(str(column), justify="right")
    for anatomy_name, row in cross.iterrows():
        grid.add_row(str(anatomy_name), *[str(v) if v else "." for v in row.tolist()])
    console.print(grid)

    side = Table(title="not indexed", show_header=True)
    side.add_column("reason")
    side.add_column("files", justify="right")
    for reason, count in errors["reason"].value_counts().items() if len(errors) else []:
        side.add_row(str(reason), str(count))
    if len(errors):
        console.print(side)
    unmapped_path = Path(out_dir) / "unmapped.csv"
    if unmapped_path.is_file():
        unmapped = pd.read_csv(unmapped_path, keep_default_na=False)
        if len(unmapped):
            top = Table(title="raw values that did not map (top 10; all in unmapped.csv)")
            for c in ("field", "raw_value", "count"):
                top.add_column(c, justify="right" if c == "count" else "left")
            for _, r in unmapped.head(10).iterrows():
                raw = " ".join(str(r["raw_value"]).split())  # one line, cut: a header may hold 64 KB strings
                top.add_row(str(r["field"]), raw if len(raw) <= 60 else raw[:59] + "…", str(r["count"]))
            console.print(top)
    console.print(f"wrote {out_dir}")
