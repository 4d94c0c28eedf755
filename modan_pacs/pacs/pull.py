"""``modan-pacs pull``: choose instances from an index and retrieve them into a STORE.

Selection works on the index (``index.parquet``): ``"per-label N"`` keeps up to N series per label
combination (``modality_label`` x ``anatomy_label``, like miniRIN's up-to-100 per class; series
drawn with a seeded generator), and ``modality`` / ``anatomy`` filters keep matching rows. The
chosen instances minus those already in the STORE are retrieved by C-GET, C-MOVE or DICOMweb,
each instance written atomically; ``STORE/pull_log.jsonl`` records arrivals and failures, so a
re-run after an interruption fetches only what is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modan_pacs.errors import InputError, PacsError
from modan_pacs.pacs.association import PacsSettings, make_settings, one_line, parse_address
from modan_pacs.pacs.getscu import ENGINES, retrieve_getscu
from modan_pacs.pacs.retrieve import (
    METHODS,
    DimseResult,
    PullSummary,
    RetrievalUnit,
    fill_sop_classes,
    merge_whole_series,
    retrieve_dimse,
    split_units,
)
from modan_pacs.pacs.store import Store

_PER_LABEL = re.compile(r"^\s*per-label\s+(\d+)\s*$")
_LOCATION = re.compile(r"^pacs://(?P<aet>[^@]+)@(?P<host>.+):(?P<port>\d+)/")


def parse_select(select: str | None) -> int | None:
    """``"per-label N"`` -> N (None when no selection). Raises InputError otherwise."""
    if select is None or not select.strip():
        return None
    match = _PER_LABEL.match(select)
    if match is None or int(match.group(1)) < 1:
        raise InputError(f'--select {select!r}: expected "per-label N" with N >= 1')
    return int(match.group(1))


class PullSettings(BaseModel):
    """What to pull and how: the one way into :func:`pull` (where the PACS is and how to talk to it
    is a :class:`~modan_pacs.pacs.association.PacsSettings`, see :func:`pacs_for_index`).

    ``method``: ``get`` (C-GET), ``move`` (C-MOVE to our storage SCP on ``move_port``) or
    ``dicomweb`` (set by giving ``dicomweb``, the WADO-RS URL); ``workers``: parallel associations
    (or HTTP sessions); ``select``: ``"per-label N"`` (up to N series per label pair, drawn with
    ``seed``); ``modalities`` / ``anatomies``: label filters; ``chunk``: at most this many instances
    per IMAGE-level request (whole series are asked for at series level); ``engine``: who speaks
    DIMSE for a C-GET, ``pynetdicom`` or ``dcmtk`` (getscu processes, :mod:`~modan_pacs.pacs.getscu`);
    ``dry_run``: plan only.
    Build it with :func:`make_pull_settings` for one-line :class:`InputError` messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "get"
    engine: str = "pynetdicom"
    workers: int = Field(default=1, ge=1)
    select: str | None = None
    modalities: tuple[str, ...] = ()
    anatomies: tuple[str, ...] = ()
    seed: int = 0
    chunk: int = Field(default=50, ge=1)
    move_port: int = Field(default=11113, ge=1, le=65535)
    dicomweb: str | None = None
    dicomweb_credentials: Path | None = None
    dry_run: bool = False

    @model_validator(mode="before")
    @classmethod
    def _dicomweb_url_sets_the_method(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("dicomweb"):
            return {**data, "method": "dicomweb"}
        return data

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"{value!r} must be get or move (or give a DICOMweb URL)")
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"{value!r} must be one of {', '.join(ENGINES)}")
        return value

    @field_validator("select")
    @classmethod
    def _select(cls, value: str | None) -> str | None:
        try:
            parse_select(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _dicomweb_needs_a_url(self) -> PullSettings:
        if self.method == "dicomweb" and not self.dicomweb:
            raise ValueError("method dicomweb needs the DICOMweb URL (dicomweb)")
        if self.engine == "dcmtk" and self.method != "get":
            raise ValueError(f"engine dcmtk runs C-GET (getscu) only, not method {self.method}")
        return self

    @property
    def per_label(self) -> int | None:
        return parse_select(self.select)


def make_pull_settings(**kwargs: object) -> PullSettings:
    """Build :class:`PullSettings`, turning validation errors into one-line :class:`InputError`."""
    return one_line(PullSettings, "pull settings", **kwargs)


def read_index_frame(index_dir: str | Path):
    """``index.parquet`` of an index folder (plain pandas)."""
    import pandas as pd

    path = Path(index_dir) / "index.parquet"
    if not path.is_file():
        raise InputError(f"--index {index_dir}: no index.parquet there (build one with `modan-pacs index`)")
    return pd.read_parquet(path)


def select_rows(
    frame, *, per_label: int | None = None, modality: Sequence[str] = (), anatomy: Sequence[str] = (), seed: int = 0
):
    """Rows of the index to pull: filters first, then up to ``per_label`` series per label pair."""
    import numpy as np

    rows = frame
    if modality:
        wanted = {m.strip() for m in modality}
        rows = rows[rows["modality_label"].isin(wanted) | rows["modality"].isin(wanted)]
    if anatomy:
        rows = rows[rows["anatomy_label"].isin({a.strip() for a in anatomy})]
    if per_label is None:
        return rows
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    labels = rows[["modality_label", "anatomy_label"]].astype(object).fillna("(none)")
    series_of = rows.assign(_m=labels["modality_label"], _a=labels["anatomy_label"])
    for _, group in series_of.groupby(["_m", "_a"], sort=True):
        series = sorted(group["series_instance_uid"].unique())
        if len(series) > per_label:
            series = sorted(rng.choice(series, size=per_label, replace=False).tolist())
        keep.extend(series)
    return rows[rows["series_instance_uid"].isin(set(keep))]


def units_from_rows(
    rows, skip: set[str], frame=None, *, coarsest: str = "IMAGE", min_units: int = 1
) -> tuple[list[RetrievalUnit], int]:
    """Group index rows into retrieval requests, leaving out SOP UIDs in ``skip``.

    A study (or series) whose every instance in ``frame`` (the whole index; default ``rows``) is
    wanted and none is already received is asked for at STUDY (or SERIES) level, as getscu does:
    one request, no instance list for the archive to resolve. Otherwise its wanted instances are
    listed (IMAGE level). ``coarsest`` caps the level (``IMAGE``, ``SERIES`` or ``STUDY``); study
    level is used only when there are at least ``min_units`` studies (so that that many parallel
    associations have work), else series level.

    Returns ``(units, n_skipped)``.
    """
    frame = rows if frame is None else frame
    series_size = frame.groupby("series_instance_uid")["sop_instance_uid"].nunique()
    study_size = frame.groupby("study_instance_uid")["sop_instance_uid"].nunique()
    if coarsest == "STUDY" and rows["study_instance_uid"].nunique() < min_units:
        coarsest = "SERIES"
    units: list[RetrievalUnit] = []
    skipped = 0
    for study, study_rows in rows.groupby("study_instance_uid", sort=True):
        wanted_study = [u for u in study_rows["sop_instance_uid"] if u not in skip]
        skipped += len(study_rows) - len(wanted_study)
        if not wanted_study:
            continue
        typed = study_rows["sop_class_uid"].notna().all()  # else fill_sop_classes asks per series
        if coarsest == "STUDY" and typed and len(set(wanted_study)) == study_size[study]:
            classes = set(study_rows["sop_class_uid"].dropna())
            units.append(RetrievalUnit(str(study), None, [str(u) for u in wanted_study], classes, level="STUDY"))
            continue
        units.extend(_series_units(study, study_rows, skip, series_size, whole_series=coarsest != "IMAGE"))
    return units, skipped


def _series_units(study, study_rows, skip: set[str], series_size, *, whole_series: bool) -> list[RetrievalUnit]:
    """One unit per series of a study: SERIES level when every instance is wanted, else IMAGE level."""
    units = []
    for series, group in study_rows.groupby("series_instance_uid", sort=True):
        wanted = [str(u) for u in group["sop_instance_uid"] if u not in skip]
        if not wanted:
            continue
        whole = whole_series and len(set(wanted)) == series_size[series]
        classes = set(group["sop_class_uid"].dropna())
        units.append(RetrievalUnit(str(study), str(series), wanted, classes, level="SERIES" if whole else "IMAGE"))
    return units


def expected_locations(rows) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (study, series) UIDs of the selected rows: what may be stored, and where."""
    return {
        str(sop): (str(study), str(series))
        for sop, study, series in zip(rows["sop_instance_uid"], rows["study_instance_uid"], rows["series_instance_uid"])
    }


def pacs_from_index(frame) -> tuple[str, int, str] | None:
    """``(host, port, called AET)`` from the index's ``location`` column, when it holds PACS locations."""
    locations = frame["location"].dropna() if "location" in frame.columns else []
    if len(locations) == 0:
        return None
    match = _LOCATION.match(str(locations.iloc[0]))
    if match is None:
        return None
    return match.group("host"), int(match.group("port")), match.group("aet")


@dataclass
class PullPlan:
    """What a pull would fetch: the requests, the instances by UID, and their size when known.

    ``bytes`` is the sum of the index's ``size`` column when every selected row has one (a folder
    index), else None; ``estimated_pixel_bytes`` is Rows x Columns x frames x bytes per sample
    (uncompressed pixel data, no header) summed over the ``estimated_rows`` rows that carry them.
    """

    requested: int
    skipped: int
    units: list[RetrievalUnit]
    expected: dict[str, tuple[str, str]]
    studies: int
    series: int
    bytes: int | None
    estimated_pixel_bytes: int
    estimated_rows: int

    @property
    def to_fetch(self) -> int:
        return self.requested - self.skipped


def _known_sum(values) -> int | None:
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    return None if len(numbers) == 0 or numbers.isna().any() else int(numbers.sum())


def plan_pull(rows, frame, store: Store, *, method: str, workers: int, chunk: int) -> PullPlan:
    """Requests for the selected ``rows`` of index ``frame`` minus what ``store`` already holds."""
    import numpy as np

    # Whole series are asked for at SERIES level. Not STUDY level: an index built with --modality
    # (or trimmed by hand) can hold part of a study, and the archive would send all of it.
    units, skipped = units_from_rows(rows, store.arrived, frame, coarsest="SERIES", min_units=workers)
    if method != "dicomweb":  # WADO-RS here streams one series per request
        units = merge_whole_series(split_units(units, chunk), min_units=workers)
    todo = rows[~rows["sop_instance_uid"].isin(store.arrived)]
    size = _known_sum(todo["size"]) if "size" in todo.columns else None
    pixel, estimated = 0, 0
    if {"rows", "columns", "bits_stored"} <= set(todo.columns):
        frames = todo["number_of_frames"].fillna(1) if "number_of_frames" in todo.columns else 1
        per_sample = np.ceil(todo["bits_stored"].astype("Float64") / 8)
        each = (todo["rows"].astype("Float64") * todo["columns"].astype("Float64") * frames * per_sample).dropna()
        pixel, estimated = int(each.sum()), len(each)
    return PullPlan(
        requested=len(rows),
        skipped=skipped,
        units=units,
        expected=expected_locations(todo),
        studies=todo["study_instance_uid"].nunique(),
        series=todo["series_instance_uid"].nunique(),
        bytes=size,
        estimated_pixel_bytes=pixel,
        estimated_rows=estimated,
    )


def pull(
    index_dir: str | Path,
    out: str | Path,
    settings: PullSettings | None = None,
    *,
    pacs: PacsSettings | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_plan: Callable[[PullPlan], None] | None = None,
) -> PullSummary:
    """Retrieve the selected instances of an index into ``out``.

    Args:
        index_dir: index folder (``index.parquet`` with sop/series/study UIDs and SOP classes).
        out: the STORE folder (created); already-received instances are skipped.
        settings: what to pull and how (:class:`PullSettings`; None = every instance by C-GET).
        pacs: where the PACS is and how to talk to it (C-GET / C-MOVE); None = from the index's
            ``location`` column with default timeouts (:func:`pacs_for_index`). Not used for DICOMweb.
        on_progress: called ``(n_instances, n_bytes)`` per arrival; ``on_plan(plan)`` once.

    Returns:
        A :class:`PullSummary`; ``summary.complete`` is False when instances failed or were not received.

    Raises:
        InputError: a bad index, or no PACS address known. PacsError: the PACS could not be reached at all.
    """
    s = settings or PullSettings()
    frame = read_index_frame(index_dir)
    rows = select_rows(frame, per_label=s.per_label, modality=s.modalities, anatomy=s.anatomies, seed=s.seed)
    rows = rows.drop_duplicates(subset=["sop_instance_uid"])
    if s.dry_run:
        store = Store.existing(out)
        plan = plan_pull(rows, frame, store, method=s.method, workers=s.workers, chunk=s.chunk)
        if on_plan is not None:
            on_plan(plan)
        return PullSummary(
            requested=plan.requested, skipped=plan.skipped, workers=s.workers, method=s.method, requests=len(plan.units)
        )
    with Store(out) as store:
        plan = plan_pull(rows, frame, store, method=s.method, workers=s.workers, chunk=s.chunk)
        if on_plan is not None:
            on_plan(plan)
        method = f"{s.method} via getscu" if s.engine == "dcmtk" else s.method
        summary = PullSummary(requested=plan.requested, skipped=plan.skipped, workers=s.workers, method=method)
        if not plan.units:
            return summary
        if s.method == "dicomweb":
            from modan_pacs.pacs.dicomweb import retrieve_dicomweb

            start = time.perf_counter()
            arrived, nbytes, unrequested, problems = retrieve_dicomweb(
                s.dicomweb,
                plan.units,
                store,
                workers=s.workers,
                credentials_file=s.dicomweb_credentials,
                on_progress=on_progress,
            )
            requests = sum(1 if u.level == "SERIES" else len(u.sop_uids) for u in plan.units)
            result = DimseResult(arrived, nbytes, unrequested, requests, problems)
        else:
            pacs = pacs or pacs_for_index(frame)
            if s.engine == "dcmtk":  # pynetdicom (and the SOP classes it needs) only if getscu leaves instances to it
                start = time.perf_counter()
                result = retrieve_getscu(
                    pacs, plan.units, store, expected=plan.expected, workers=s.workers, on_progress=on_progress
                )
            else:
                fill_sop_classes(pacs, plan.units)
                import pynetdicom  # noqa: F401  (imported before the clock starts: a one-off cost, not transfer time)

                start = time.perf_counter()
                result = retrieve_dimse(
                    pacs,
                    plan.units,
                    store,
                    expected=plan.expected,
                    method=s.method,
                    workers=s.workers,
                    move_port=s.move_port,
                    on_progress=on_progress,
                )
        summary.seconds = time.perf_counter() - start
        _account(summary, result, plan, store)
    return summary


def pacs_for_index(
    index: str | Path | object, *, address: str | None = None, called_aet: str | None = None, **settings: object
) -> PacsSettings:
    """:class:`PacsSettings` of the PACS an index was built from: ``address`` (``HOST:PORT``) and
    ``called_aet`` when given, else from the index's ``pacs://AET@host:port/...`` locations;
    ``settings`` are the other :class:`PacsSettings` fields (calling AE title, timeouts, retries).

    ``index`` is an index folder or its ``index.parquet`` frame.

    Raises:
        InputError: no address given and none in the index, no AE title, or a bad setting.
    """
    frame = read_index_frame(index) if isinstance(index, (str, Path)) else index
    if address:
        host, port = parse_address(address)
        aet = called_aet
    else:
        found = pacs_from_index(frame)
        if found is None:
            raise InputError("--pacs HOST:PORT is required: the index holds no pacs:// locations")
        host, port, aet = found
        aet = called_aet or aet
    if not aet:
        raise InputError("--called-aet is required (the PACS's AE title)")
    return make_settings(host=host, port=port, called_aet=aet, **settings)


def _account(summary: PullSummary, result: DimseResult, plan: PullPlan, store: Store) -> None:
    """Fill the summary and log every requested instance that did not arrive."""
    summary.arrived = result.arrived
    summary.bytes = result.bytes
    summary.unrequested = result.unrequested
    summary.requests = result.requests
    summary.interrupted = result.problems
    missing = set(plan.expected) - store.arrived
    first = f": {result.problems[0]}" if result.problems else ""
    for uid in sorted(missing):
        store.record(status="failed", sop_instance_uid=uid, reason="not received" + first)
    summary.failed = len(missing)


def plan_lines(plan: PullPlan, store: str | Path) -> list[str]:
    """What ``pull --dry-run`` prints: counts, size (or that it is unknown), studies and requests."""
    if plan.bytes is not None:
        size = f"{plan.bytes / 1e6:,.1f} MB (sum of the index's file sizes)"
    elif plan.estimated_rows:
        size = (
            f"size unknown (the index holds no file sizes); the pixel data of the {plan.estimated_rows:,} instances "
            f"whose dimensions it holds, uncompressed, is about {plan.estimated_pixel_bytes / 1e6:,.1f} MB "
            "(Rows x Columns x frames x bytes per sample)"
        )
    else:
        size = (
            "size unknown (the index holds neither file sizes nor image dimensions: "
            "index with --level image to estimate)"
        )
    levels = {level: sum(1 for u in plan.units if u.level == level) for level in ("SERIES", "IMAGE")}
    return [
        f"would fetch {plan.to_fetch:,} of {plan.requested:,} selected instances "
        f"({plan.skipped:,} already in {store}) from {plan.studies:,} studies, {plan.series:,} series",
        size,
        f"{len(plan.units):,} request(s): {levels['SERIES']:,} whole series, {levels['IMAGE']:,} instance lists",
    ]


def summary_line(summary: PullSummary, store: str | Path) -> str:
    """One line describing a pull (for the CLI and logs)."""
    unrequested = f", {summary.unrequested} sent unasked (not stored)" if summary.unrequested else ""
    return (
        f"{summary.arrived} arrived, {summary.skipped} already in {store}, {summary.failed} failed "
        f"of {summary.requested} selected{unrequested}; {summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s "
        f"({summary.instances_per_second:.1f} instances/s, {summary.megabytes_per_second:.1f} MB/s, "
        f"{summary.requests} request(s), {summary.workers} worker(s), {summary.method})"
    )


def raise_if_incomplete(summary: PullSummary, store: str | Path) -> None:
    """Raise a one-line PacsError when a pull left instances behind (after its log was written)."""
    if summary.complete:
        return
    first = summary.interrupted[0] if summary.interrupted else "sub-operations failed"
    raise PacsError(
        f"pull incomplete: {summary.failed} of {summary.requested - summary.skipped} instances not received "
        f"({first}); see {Path(store) / 'pull_log.jsonl'} and re-run to resume"
    )
