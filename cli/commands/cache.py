"""`modan-pacs cache`: decode images once (an index, a CSV or a folder) into a memory-mappable cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("cache")(cache)


def cache(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Cache folder to write (re-running an interrupted build resumes it).")
    ],
    index: Annotated[
        Optional[Path],
        typer.Option(
            "--index", help="Index folder from `modan-pacs index` (index.parquet, labels.npy, vocabulary.yaml)."
        ),
    ] = None,
    csv: Annotated[
        Optional[Path],
        typer.Option("--csv", help="CSV with columns path, modality, anatomy (paths relative to the CSV's folder)."),
    ] = None,
    folder: Annotated[
        Optional[Path], typer.Option("--folder", help="Image folder laid out <modality>/<anatomy>/**/<image>.")
    ] = None,
    root: Annotated[
        Optional[Path], typer.Option("--root", help="With --csv: folder the CSV's relative paths start from.")
    ] = None,
    vocab: Annotated[
        Optional[Path],
        typer.Option(
            "--vocab", help="Vocabulary YAML for --csv / --folder (default: shipped). --index uses the index's."
        ),
    ] = None,
    size: Annotated[int, typer.Option("--size", help="Side of the square cached images (pixels).")] = 224,
    workers: Annotated[
        Optional[int], typer.Option("--workers", "-w", help="Decoding processes (default: CPU count).")
    ] = None,
    slices: Annotated[
        str,
        typer.Option(
            "--slices",
            help=(
                "Multi-frame files and series volumes: middle, all, even:N (N spread slices) "
                "or center:K (K central slices)."
            ),
        ),
    ] = "middle",
    resize: Annotated[str, typer.Option("--resize", help="pad (keep aspect, black borders) or stretch.")] = "pad",
    ct_window_by_anatomy: Annotated[
        bool,
        typer.Option(
            "--ct-window-by-anatomy/--ct-window-from-header", help="CT: window per anatomy (table) or the header's VOI."
        ),
    ] = True,
    window_config: Annotated[
        Optional[Path],
        typer.Option(
            "--window-config", help="YAML {anatomy: [center, width], default: [c, w]} overriding the CT windows."
        ),
    ] = None,
    series_volumes: Annotated[
        bool,
        typer.Option(
            "--series-volumes/--no-series-volumes",
            help="Treat single-frame CT/MR/PT/NM series as volumes (slices by --slices).",
        ),
    ] = True,
    keep_non_image: Annotated[
        bool,
        typer.Option(
            "--keep-non-image",
            help="Keep SOP classes that are not images of a patient (SEG, RTDOSE, ...); default: excluded.",
        ),
    ] = False,
    secondary_capture: Annotated[
        str,
        typer.Option(
            "--secondary-capture",
            help=(
                "Secondary capture (OT/SC) kept when Image Type is: original-primary, "
                "primary (any ...\\PRIMARY) or all."
            ),
        ),
    ] = "original-primary",
    keep_burned_in: Annotated[
        bool, typer.Option("--keep-burned-in", help="Keep images with Burned In Annotation = YES; default: excluded.")
    ] = False,
    crop_ultrasound: Annotated[
        bool,
        typer.Option(
            "--crop-ultrasound/--no-crop-ultrasound",
            help="US: crop to the union of the Sequence of Ultrasound Regions' image regions.",
        ),
    ] = True,
    min_std: Annotated[
        float,
        typer.Option(
            "--min-std", help="Exclude near-constant images: std of the [0, 1] display values below this (0 = off)."
        ),
    ] = 0.02,
    pet_nm_window: Annotated[
        str,
        typer.Option(
            "--pet-nm-window",
            help=(
                "PET / NM display: percentile (0.5-99.5th of the frame), header (the header's VOI first) "
                "or suv (PET in body-weight SUV 0-7 where the header allows)."
            ),
        ),
    ] = "percentile",
    unit_timeout: Annotated[
        float,
        typer.Option(
            "--unit-timeout",
            help=(
                "Seconds one file or series may take in a worker before it is stopped and recorded "
                "(0 = no limit; needs --workers >= 2)."
            ),
        ),
    ] = 300.0,
    montage: Annotated[
        bool,
        typer.Option("--montage/--no-montage", help="Write OUT/montage.png (sample per label pair + excluded inputs)."),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard an existing cache or unfinished build in OUT.")
    ] = False,
) -> None:
    """Decode each image once (pydicom + plugins, SimpleITK) into OUT: images.npy, labels.npy, \
manifest.parquet, errors.parquet, summary.json, montage.png."""
    from rich.console import Console

    from modan_pacs.errors import InputError
    from modan_pacs.pixels.build import CacheSettings, build_cache_from_index, default_workers

    given = [name for name, value in (("--index", index), ("--csv", csv), ("--folder", folder)) if value is not None]
    if len(given) != 1:
        raise InputError(
            "give exactly one of --index, --csv, --folder" + (f" (got {', '.join(given)})" if given else "")
        )
    settings = CacheSettings(
        size=size,
        slices=slices,
        resize=resize,
        ct_window="anatomy" if ct_window_by_anatomy else "header",
        series_volumes=series_volumes,
        keep_non_image=keep_non_image,
        secondary_capture=secondary_capture,
        keep_burned_in=keep_burned_in,
        crop_ultrasound=crop_ultrasound,
        min_std=min_std,
        pet_nm_window=pet_nm_window,
        unit_timeout=unit_timeout,
    )
    workers = workers or default_workers()
    console = Console()
    from modan_pacs.cli.bars import counting_bar

    bar, update = counting_bar("decoding")
    if index is not None:
        with bar:
            result = build_cache_from_index(
                index, out, settings, window_config=window_config, workers=workers, overwrite=overwrite, progress=update
            )
    else:
        from modan_pacs.data.sources import build_cache_from_records, read_image_csv, read_image_folder, unmapped_values
        from modan_pacs.labels import Vocabulary

        vocabulary = Vocabulary.load(vocab)
        records = (
            read_image_csv(csv, vocabulary, root=root) if csv is not None else read_image_folder(folder, vocabulary)
        )
        extra = tuple(c for c in ("label", "target", "split") if c in records.columns)
        with bar:
            result = build_cache_from_records(
                records,
                vocabulary,
                out,
                settings,
                window_config=window_config,
                extra_columns=extra,
                workers=workers,
                overwrite=overwrite,
                progress=update,
            )
        unmapped = unmapped_values(records)
        if len(unmapped):
            console.print(
                "[yellow]unmapped values (label group left empty):[/] "
                + ", ".join(f"{r.group}={r.raw_value!r} x{r.count}" for r in unmapped.itertuples())
            )
    resumed = f", {result.n_resumed} units resumed" if result.n_resumed else ""
    console.print(
        f"[green]cache[/] {result.path}: {result.n_rows} images from {result.n_units} units, "
        f"{result.n_excluded} excluded, {result.n_errors} errors{resumed}"
    )
    summary = result.summary or {}
    for title, counts in (
        ("excluded", summary.get("excluded")),
        ("errors", summary.get("errors")),
        ("notes", summary.get("notes")),
    ):
        if counts:
            console.print(f"  {title}: " + ", ".join(f"{code} {n}" for code, n in counts.items()))
    if montage:
        from modan_pacs.pixels.montage import write_montage

        console.print(f"  QA montage: {write_montage(out)}")
