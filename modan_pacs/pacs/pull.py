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
from pathlib import Path

from modan_pacs.errors import InputError, PacsError
from modan_pacs.pacs.association import make_settings, parse_address
from modan_pacs.pacs.retrieve import METHODS, PullSummary, RetrievalUnit, retrieve_dimse, split_units
from modan_pacs.pacs.store import Store

_PER_LABEL = re.compile(r"^\s*per-label\s+(\d+)\s*$")
_LOCATION = re.compile(r"^pacs://(?P<aet>[^@]+)@(?P<host>.+):(?P<port>\d+)/")


def parse_select(select: str | None) -> int | None:
    """``"per-label N"`` -> N (None when no selection). Raises InputError otherwise."""
    if select is None or not select.strip():
        return None
    match = _PER_LABEL.match(select)
    if match is None or int(match.group(1)) < 1:
        raise InputError(f"--select {select!r}: expected \"per-label N\" with N >= 1")
    return int(match.group(1))


def read_index_frame(index_dir: str | Path):
    """``index.parquet`` of an index folder (plain pandas)."""
    import pandas as pd

    path = Path(index_dir) / "index.parquet"
    if not path.is_file():
        raise InputError(f"--index {index_dir}: no index.parquet there (build one with `modan-pacs index`)")
    return pd.read_parquet(path)


def select_rows(frame, *, per_label: int | None = None, modality: Sequence[str] = (), anatomy: Sequence[str] = (), seed: int = 0):
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


def units_from_rows(rows, skip: set[str]) -> tuple[list[RetrievalUnit], int]:
    """Group index rows by series into retrieval units, leaving out SOP UIDs in ``skip``.

    Returns ``(units, n_skipped)``.
    """
    units: list[RetrievalUnit] = []
    skipped = 0
    for (study, series), group in rows.groupby(["study_instance_uid", "series_instance_uid"], sort=True):
        wanted = [u for u in group["sop_instance_uid"] if u not in skip]
        skipped += len(group) - len(wanted)
        if wanted:
            classes = {c for c in group["sop_class_uid"].dropna()}
            units.append(RetrievalUnit(str(study), str(series), [str(u) for u in wanted], classes))
    return units, skipped


def pacs_from_index(frame) -> tuple[str, int, str] | None:
    """``(host, port, called AET)`` from the index's ``location`` column, when it holds PACS locations."""
    locations = frame["location"].dropna() if "location" in frame.columns else []
    if len(locations) == 0:
        return None
    match = _LOCATION.match(str(locations.iloc[0]))
    if match is None:
        return None
    return match.group("host"), int(match.group("port")), match.group("aet")


def pull(
    *,
    index_dir: str | Path,
    out: str | Path,
    pacs: str | None = None,
    called_aet: str | None = None,
    calling_aet: str = "MODANPACS",
    method: str = "get",
    workers: int = 1,
    select: str | None = None,
    modality: Sequence[str] = (),
    anatomy: Sequence[str] = (),
    seed: int = 0,
    chunk: int = 50,
    move_port: int = 11113,
    dicomweb: str | None = None,
    dicomweb_credentials: str | Path | None = None,
    connection_timeout: float = 10.0,
    acse_timeout: float = 10.0,
    dimse_timeout: float = 30.0,
    retries: int = 2,
    backoff: float = 0.5,
    on_progress: Callable[[int, int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> PullSummary:
    """Retrieve the selected instances of an index into ``out``.

    Args:
        index_dir: index folder (``index.parquet`` with sop/series/study UIDs and SOP classes).
        out: the STORE folder (created); already-received instances are skipped.
        pacs: ``HOST:PORT`` (default: from the index's ``location``); ``called_aet`` likewise.
        method: ``get`` (C-GET), ``move`` (C-MOVE to our storage SCP on ``move_port``) or
            ``dicomweb`` (set by giving ``dicomweb``).
        workers: parallel associations (or HTTP sessions).
        select: ``"per-label N"``; ``modality`` / ``anatomy``: label filters.
        chunk: at most this many instances per C-GET/C-MOVE request (parallel work units).
        on_progress: called ``(n_instances, n_bytes)`` per arrival; ``on_plan(to_fetch, skipped)`` once.

    Returns:
        A :class:`PullSummary`; ``summary.complete`` is False when instances failed or were not received.

    Raises:
        InputError: bad options or index. PacsError: the PACS could not be reached at all.
    """
    if dicomweb:
        method = "dicomweb"
    if method not in METHODS:
        raise InputError(f"--method {method!r} must be one of get, move (or give --dicomweb URL)")
    if workers < 1:
        raise InputError(f"--workers {workers} must be >= 1")
    if chunk < 1:
        raise InputError(f"chunk {chunk} must be >= 1")
    per_label = parse_select(select)
    frame = read_index_frame(index_dir)
    rows = select_rows(frame, per_label=per_label, modality=modality, anatomy=anatomy, seed=seed)
    store = Store(out)
    units, skipped = units_from_rows(rows, store.arrived)
    requested = len(rows)
    if on_plan is not None:
        on_plan(requested - skipped, skipped)
    summary = PullSummary(requested=requested, skipped=skipped, workers=workers, method=method)
    if not units:
        return summary

    start = time.perf_counter()
    if method == "dicomweb":
        from modan_pacs.pacs.dicomweb import retrieve_dicomweb

        arrived, nbytes, problems = retrieve_dicomweb(
            dicomweb, units, store, workers=workers, credentials_file=dicomweb_credentials, on_progress=on_progress
        )
    else:
        if pacs:
            host, port = parse_address(pacs)
            aet = called_aet
        else:
            found = pacs_from_index(frame)
            if found is None:
                raise InputError("--pacs HOST:PORT is required: the index holds no pacs:// locations")
            host, port, aet = found
            aet = called_aet or aet
        if not aet:
            raise InputError("--called-aet is required (the PACS's AE title)")
        settings = make_settings(
            host=host,
            port=port,
            called_aet=aet,
            calling_aet=calling_aet,
            connection_timeout=connection_timeout,
            acse_timeout=acse_timeout,
            dimse_timeout=dimse_timeout,
            retries=retries,
            backoff=backoff,
        )
        _fill_sop_classes(settings, units)
        arrived, nbytes, problems = retrieve_dimse(
            settings, split_units(units, chunk), store, method=method, workers=workers, move_port=move_port, on_progress=on_progress
        )
    summary.seconds = time.perf_counter() - start
    summary.arrived = arrived
    summary.bytes = nbytes
    summary.interrupted = problems
    wanted = {u for unit in units for u in unit.sop_uids}
    missing = wanted - store.arrived
    for uid in sorted(missing):
        store.record(status="failed", sop_instance_uid=uid, reason="not received" + (f": {problems[0]}" if problems else ""))
    summary.failed = len(missing)
    return summary


def _fill_sop_classes(settings, units: list[RetrievalUnit]) -> None:
    """Ask the PACS (IMAGE-level C-FIND) for the SOP classes of units whose index rows lack them.

    C-GET needs a storage context per SOP class; an index built elsewhere may not carry them.
    """
    missing = [unit for unit in units if not unit.sop_classes]
    if not missing:
        return
    from modan_pacs.pacs.query import FindSession, iter_instances_of_series

    with FindSession(settings) as session:
        for unit in missing:
            wanted = set(unit.sop_uids)
            unit.sop_classes = {
                cls for uid, cls in iter_instances_of_series(settings, unit.study_uid, unit.series_uid, session)
                if cls and uid in wanted
            }


def summary_line(summary: PullSummary, store: str | Path) -> str:
    """One line describing a pull (for the CLI and logs)."""
    return (
        f"{summary.arrived} arrived, {summary.skipped} already in {store}, {summary.failed} failed "
        f"of {summary.requested} selected; {summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s "
        f"({summary.instances_per_second:.1f} instances/s, {summary.megabytes_per_second:.1f} MB/s, "
        f"{summary.workers} worker(s), {summary.method})"
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

