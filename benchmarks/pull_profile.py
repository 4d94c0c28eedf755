"""Where one C-GET association's time goes: PDUs per instance, CPU per instance, a profile of every thread.

Starts a throw-away Orthanc on loopback (``TCP_NODELAY=1``; ``--orthanc-max-pdu`` sets its
``MaximumPduLength``, default Orthanc's own 16384), loads N copies of one real CT (as
``pull_bench.py`` does), indexes them, then:

1. **PDU census**: one ``pull --method get --workers 1`` with an ``EVT_PDU_RECV`` handler added for
   this run only (it costs per PDU, so the timed runs do not have it): what each side advertised
   (A-ASSOCIATE maximum length), how many P-DATA-TF PDUs and PDVs arrived per instance and their
   sizes. getscu's side is read from ``getscu -d`` (what it advertises and what Orthanc accepted)
   and from ``strace`` of its socket reads when strace is installed.
2. **CPU per instance**: ``--repeats`` interleaved runs of getscu and of our C-GET (1 association,
   and 2 with ``--workers 2``): wall seconds, CPU seconds of the client (``getrusage``: children for
   getscu, this process for ours, whose imports are done beforehand) and of Orthanc (``/proc``).
3. **Processes** (``--process-pair``): the index split in two halves (by study), each pulled by
   its own process with one association, started together; against one process with two
   associations on the whole index. Shows what associations in separate processes (no shared
   GIL) would give on this machine; ``pull`` itself runs its associations as threads.
4. **Profile** (``--profile``): one more run of our C-GET with a ``cProfile`` per thread (the
   worker thread that waits on C-GET responses, pynetdicom's association and DUL threads, the
   store writer); the top functions by internal time and by cumulative time, per instance.

Usage:
    .venv/bin/python benchmarks/pull_profile.py --instances 192 --repeats 3 --profile [--orthanc-max-pdu 131072]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pull_bench import OUR_AET, PACS_AET, count_files, make_instances, write_study_queries  # noqa: E402


def orthanc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:13]) / ticks  # utime, stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pdu_census(pull, index: Path, out: Path, n: int) -> dict:
    """One C-GET pull with an EVT_PDU_RECV handler counting P-DATA-TF PDUs and PDVs."""
    from pynetdicom import evt
    from pynetdicom.pdu import P_DATA_TF

    import modan_pacs.pacs.retrieve as retrieve
    from modan_pacs.pacs import PullSettings, pacs_for_index

    seen: dict = {"pdus": 0, "pdu_bytes": [], "pdvs": 0, "command_pdvs": 0, "data_pdvs": [], "advertised": None}

    def on_pdu(event) -> None:
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        seen["pdus"] += 1
        seen["pdu_bytes"].append(len(pdu))
        for item in pdu.presentation_data_value_items:
            seen["pdvs"] += 1
            value = item.presentation_data_value
            if value[0] & 1:
                seen["command_pdvs"] += 1
            else:
                seen["data_pdvs"].append(len(value) - 1)

    original = retrieve.open_association

    def open_with_census(settings, contexts, *, evt_handlers=None, **kwargs):
        assoc = original(settings, contexts, evt_handlers=[*(evt_handlers or []), (evt.EVT_PDU_RECV, on_pdu)], **kwargs)
        seen["advertised"] = (assoc.requestor.maximum_length, assoc.acceptor.maximum_length)
        return assoc

    retrieve.open_association = open_with_census
    try:
        summary = pull(
            index, out, PullSettings(method="get", workers=1), pacs=pacs_for_index(index, calling_aet=OUR_AET)
        )
    finally:
        retrieve.open_association = original
    if summary.arrived != n:
        raise SystemExit(f"census run: {summary.arrived} of {n} arrived")
    return seen


def getscu_census(peer: list[str], queries: list[str], out: Path) -> dict:
    """What getscu advertises and accepts (its -d log) and, with strace, its reads per instance."""
    out.mkdir(parents=True)
    found: dict = {}
    debug = subprocess.run(
        ["getscu", "-d", *peer, *queries, "-od", str(out)],
        env=dict(os.environ, TCP_NODELAY="1"),
        capture_output=True,
        text=True,
    )
    text = debug.stdout + debug.stderr
    for key, pattern in (
        ("'Our Max PDU Receive Size' in its log (request, then acknowledgement)", r"Our Max PDU Receive Size:\s*(\d+)"),
        (
            "'Their Max PDU Receive Size' in its log (request, then acknowledgement)",
            r"Their Max PDU Receive Size:\s*(\d+)",
        ),
    ):
        values = re.findall(pattern, text)
        found[key] = ", ".join(values[:4]) if values else "not in the log"
    shutil.rmtree(out)
    if shutil.which("strace"):
        out.mkdir(parents=True)
        trace = out.parent / "getscu.strace"
        subprocess.run(
            ["strace", "-f", "-e", "trace=read,recvfrom", "-o", str(trace), "getscu", *peer, *queries, "-od", str(out)],
            env=dict(os.environ, TCP_NODELAY="1"),
            capture_output=True,
        )
        sizes = [int(m) for m in re.findall(r"(?:read|recvfrom)\(\d+, .*?\) = (\d+)", trace.read_text())]
        found["socket/file reads"] = len(sizes)
        found["reads of 16,390 bytes (a 16 KB PDU body + header)"] = sum(1 for s in sizes if s in (16384, 16378, 16390))
        found["read sizes, most common"] = Counter(sizes).most_common(5)
        shutil.rmtree(out)
    return found


def thread_kind(thread: threading.Thread) -> str:
    """Which part of a pull a thread is: pynetdicom's DUL reactor, its association reactor, our worker or writer."""
    target = getattr(thread, "_target", None)
    name = getattr(target, "__qualname__", "") or thread.name
    if "DULServiceProvider" in name or "run_reactor" in thread.name:
        return "pynetdicom DUL (PDUs)"
    if thread.name.startswith(("RequestorThread", "AcceptorThread")):
        return "pynetdicom association reactor"
    if thread.name.startswith("modan-pacs-store-writer"):
        return "our store writer"
    if thread.name.startswith("ThreadPoolExecutor"):
        return "retrieve worker (C-GET responses, C-STORE handling)"
    return thread.name


class ThreadCpu:
    """CPU seconds of every thread started inside the ``with``, by :func:`thread_kind` (``time.thread_time``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._run = threading.Thread.run

    def __enter__(self) -> ThreadCpu:
        original, seconds, lock = self._run, self.seconds, self._lock

        def timed_run(thread: threading.Thread) -> None:
            start = time.thread_time()
            try:
                original(thread)
            finally:
                with lock:
                    seconds[thread_kind(thread)] += time.thread_time() - start

        threading.Thread.run = timed_run
        return self

    def __exit__(self, *exc: object) -> None:
        threading.Thread.run = self._run


def _half_puller(index: str, out: str, repeats: int, barrier, results) -> None:
    """Child process of ``--process-pair``: imports first, then one pull per repeat, started at the barrier."""
    import pynetdicom  # noqa: F401

    from modan_pacs.pacs import PullSettings, pacs_for_index, pull

    for repeat in range(repeats):
        barrier.wait()
        start = time.perf_counter()
        summary = pull(
            index,
            f"{out}/r{repeat}",
            PullSettings(method="get", workers=1),
            pacs=pacs_for_index(index, calling_aet=OUR_AET),
        )
        results.put((repeat, summary.arrived, start, time.perf_counter()))


def process_pair(pull, work: Path, n: int, repeats: int) -> None:
    """Two processes with one association each (half the index each) vs one process with two."""
    import multiprocessing
    import statistics

    import pandas as pd

    from modan_pacs.pacs import PullSettings, pacs_for_index

    frame = pd.read_parquet(work / "idx" / "index.parquet")
    studies = sorted(frame["study_instance_uid"].unique())
    halves = [studies[: len(studies) // 2], studies[len(studies) // 2 :]]
    for i, half in enumerate(halves):
        (work / f"half{i}").mkdir()
        frame[frame["study_instance_uid"].isin(half)].to_parquet(work / f"half{i}" / "index.parquet")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    children = [
        ctx.Process(
            target=_half_puller, args=(str(work / f"half{i}"), str(work / f"phalf{i}"), repeats, barrier, results)
        )
        for i in range(2)
    ]
    for child in children:
        child.start()
    rates: dict[str, list[float]] = defaultdict(list)
    print("\n## two processes x 1 association vs one process x 2 associations (threads)")
    try:
        for repeat in range(repeats):
            load = os.getloadavg()[0]
            for w in (1, 2):
                t0 = time.perf_counter()
                s = pull(
                    work / "idx",
                    work / f"pair{repeat}-{w}",
                    PullSettings(method="get", workers=w),
                    pacs=pacs_for_index(work / "idx", calling_aet=OUR_AET),
                )
                if s.arrived != n:
                    raise SystemExit(f"pull get {w}: {s.arrived} of {n}")
                rates[f"1 process, {w} association(s)"].append(n / (time.perf_counter() - t0))
            barrier.wait()
            got = [results.get(timeout=120) for _ in range(2)]
            if sum(arrived for _, arrived, _, _ in got) != n:
                raise SystemExit(f"process pair: {sum(a for _, a, _, _ in got)} of {n}")
            seconds = max(end for *_, end in got) - min(start for _, _, start, _ in got)
            rates["2 processes, 1 association each"].append(n / seconds)
            print(
                f"  repeat {repeat + 1} (load {load:.2f}): "
                + "; ".join(f"{k} {v[-1]:.0f} inst/s" for k, v in rates.items()),
                flush=True,
            )
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
    base = rates["1 process, 1 association(s)"]
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        print(f"- {name}: median {statistics.median(values):.0f} inst/s, {ratio:.2f}x one association")


def profile_run(pull, index: Path, out: Path, n: int, top: int, clock: str) -> str:
    """One C-GET pull with a cProfile per thread; the top functions per thread, per instance.

    ``clock`` "cpu" times each thread's CPU (``time.thread_time``: waits and sleeps count nothing),
    "wall" its wall time (waits included).
    """
    from modan_pacs.pacs import PullSettings, pacs_for_index

    timer = time.thread_time if clock == "cpu" else time.perf_counter
    profiles: dict[str, cProfile.Profile] = {}
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(self) -> None:
        profile = cProfile.Profile(timer)
        with lock:
            name = re.sub(r"\d+", "#", self.name)
            profiles[f"{name} {len(profiles)}"] = profile
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    main = cProfile.Profile(timer)
    threading.Thread.run = profiled_run
    try:
        main.enable()
        summary = pull(
            index, out, PullSettings(method="get", workers=1), pacs=pacs_for_index(index, calling_aet=OUR_AET)
        )
        main.disable()
    finally:
        threading.Thread.run = original_run
    if summary.arrived != n:
        raise SystemExit(f"profile run: {summary.arrived} of {n} arrived")
    report = io.StringIO()
    totals: dict[str, float] = defaultdict(float)
    for name, profile in [("main", main), *profiles.items()]:
        stats = pstats.Stats(profile, stream=report)
        total = stats.total_tt  # type: ignore[attr-defined]
        kind = name.rsplit(" ", 1)[0]
        totals[kind] += total
        if total < 0.01:
            continue
        report.write(f"\n### thread {name}: {total:.3f} s profiled ({total / n * 1e3:.2f} ms per instance)\n")
        for order in ("tottime", "cumulative"):
            report.write(f"\n-- by {order} (ms per instance) --\n")
            stats.sort_stats(order)
            width = 0
            for func in stats.fcn_list[:top]:  # type: ignore[attr-defined]
                cc, nc, tt, ct, _ = stats.stats[func]  # type: ignore[attr-defined]
                filename, line, fname = func
                where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({fname})" if line else fname
                width = max(width, len(where))
                report.write(f"  {tt / n * 1e3:7.3f} tot {ct / n * 1e3:7.3f} cum {nc / n:7.1f} calls  {where}\n")
    report.write(
        "\nprofiled seconds by thread kind (profiler overhead included): "
        + ", ".join(f"{k} {v:.2f}" for k, v in totals.items())
        + "\n"
    )
    return report.getvalue()


def census(args, pull, work: Path, n: int, peer: list[str], queries: list[str]) -> None:
    """Print the PDU census of our C-GET and of getscu."""
    seen = pdu_census(pull, work / "idx", work / "census", n)
    shutil.rmtree(work / "census")
    data = seen["data_pdvs"]
    print("\n## PDU census, our C-GET (1 association)")
    print(
        f"- A-ASSOCIATE maximum PDU length: ours {seen['advertised'][0]} (0 = unlimited), "
        f"Orthanc's {seen['advertised'][1]}"
    )
    print(
        f"- P-DATA-TF PDUs received: {seen['pdus']} ({seen['pdus'] / n:.1f} per instance); PDVs {seen['pdvs']} "
        f"({seen['command_pdvs']} command, {len(data)} data)"
    )
    print(f"- PDU length: max {max(seen['pdu_bytes'])}, most common {Counter(seen['pdu_bytes']).most_common(3)}")
    print(f"- data PDV payload: max {max(data)}, most common {Counter(data).most_common(3)}")
    if shutil.which("getscu"):
        print("\n## getscu")
        for key, value in getscu_census(peer, queries, work / "getscu-census").items():
            print(f"- {key}: {value}")


def main() -> None:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=192)
    parser.add_argument("--per-series", type=int, default=32)
    parser.add_argument("--series-per-study", type=int, default=3)
    parser.add_argument("--source", default="693_UNCR.dcm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--orthanc-max-pdu", type=int, default=None, help="Orthanc's MaximumPduLength (default: its 16384)"
    )
    parser.add_argument("--getscu-max-pdu", type=int, default=None, help="getscu --max-pdu (default: its 16384)")
    parser.add_argument(
        "--process-pair",
        action="store_true",
        help="also: 2 processes x 1 association (half the index each) vs 1 process x 2 associations",
    )
    parser.add_argument("--no-census", action="store_true", help="skip the PDU census")
    parser.add_argument("--profile", action="store_true", help="also one cProfile'd run of our C-GET")
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="profile CPU time per thread, or wall time"
    )
    args = parser.parse_args()

    import pynetdicom  # noqa: F401  (imported before timing, as in pull_bench's library calls)
    from pydicom.data import get_testdata_file

    from modan_pacs.pacs import (
        OrthancServer,
        PacsQuery,
        PullSettings,
        build_pacs_index,
        make_settings,
        pacs_for_index,
        pull,
        send_files,
    )

    n = args.instances
    source = Path(get_testdata_file(args.source))
    work = Path(tempfile.mkdtemp(prefix="pull-profile-"))
    server = OrthancServer(
        aet=PACS_AET, modalities={OUR_AET: ("127.0.0.1", 11113)}, workdir=work / "orthanc", max_pdu=args.orthanc_max_pdu
    )
    server.start()
    try:
        from modan_pacs.pacs import PullSettings, pacs_for_index

        settings = make_settings(host="127.0.0.1", port=server.dicom_port, called_aet=PACS_AET, calling_aet=OUR_AET)
        paths = make_instances(work / "src", source, n, args.per_series, args.series_per_study)
        if len(send_files(settings, paths).stored) != n:
            raise SystemExit("loading failed")
        build_pacs_index(settings, PacsQuery(level="image"), out_dir=work / "idx", salt_file=work / "salt")
        import pandas as pd

        studies = sorted(pd.read_parquet(work / "idx" / "index.parquet")["study_instance_uid"].unique())
        queries = [str(q) for q in write_study_queries(work / "queries", studies)]
        peer = ["-S", "-aet", OUR_AET, "-aec", PACS_AET, "127.0.0.1", str(server.dicom_port)]
        if args.getscu_max_pdu:
            peer = ["--max-pdu", str(args.getscu_max_pdu), *peer]
        orthanc_pid = server.process.pid
        print(
            f"{n} instances of {source.name} ({source.stat().st_size / 1e3:.0f} kB); Orthanc MaximumPduLength "
            f"{args.orthanc_max_pdu or 'default (16384)'}; "
            f"getscu --max-pdu {args.getscu_max_pdu or 'default (16384)'}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )

        if not args.no_census:
            census(args, pull, work, n, peer, queries)

        print("\n## wall and CPU per run (interleaved)")
        rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        threads: dict[tuple[int, str], list[float]] = defaultdict(list)
        for repeat in range(args.repeats):
            base = work / f"r{repeat}"
            load = os.getloadavg()[0]
            if shutil.which("getscu"):
                out = base / "getscu"
                out.mkdir(parents=True)
                c0, o0, t0 = children_cpu(), orthanc_cpu(orthanc_pid), time.perf_counter()
                subprocess.run(
                    ["getscu", *peer, *queries, "-od", str(out)],
                    env=dict(os.environ, TCP_NODELAY="1"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                t, c, o = time.perf_counter() - t0, children_cpu() - c0, orthanc_cpu(orthanc_pid) - o0
                if count_files(out) != n:
                    raise SystemExit(f"getscu: {count_files(out)} of {n}")
                rows["getscu"].append((t, c, o))
                print(
                    f"  repeat {repeat + 1} (load {load:.2f}) getscu: {n / t:6.1f} inst/s; client CPU "
                    f"{c / n * 1e3:.2f} ms/inst; Orthanc CPU {o / n * 1e3:.2f} ms/inst",
                    flush=True,
                )
            for w in args.workers:
                c0, o0, t0 = self_cpu(), orthanc_cpu(orthanc_pid), time.perf_counter()
                with ThreadCpu() as by_thread:
                    s = pull(
                        work / "idx",
                        base / f"get{w}",
                        PullSettings(method="get", workers=w),
                        pacs=pacs_for_index(work / "idx", calling_aet=OUR_AET),
                    )
                t, c, o = time.perf_counter() - t0, self_cpu() - c0, orthanc_cpu(orthanc_pid) - o0
                by_thread.seconds["main thread (plan, waiting)"] = c - sum(by_thread.seconds.values())
                for kind, seconds in by_thread.seconds.items():
                    threads[(w, kind)].append(seconds)
                if s.arrived != n:
                    raise SystemExit(f"pull get: {s.arrived} of {n}")
                rows[f"pull get, {w} association(s)"].append((t, c, o))
                print(
                    f"  repeat {repeat + 1} (load {load:.2f}) pull get {w}: {n / t:6.1f} inst/s (library seconds "
                    f"{s.seconds:.2f}); client CPU {c / n * 1e3:.2f} ms/inst; Orthanc CPU {o / n * 1e3:.2f} ms/inst",
                    flush=True,
                )
            shutil.rmtree(base)
        import statistics

        print("\n| client | median inst/s | median client CPU ms/inst | median Orthanc CPU ms/inst |")
        print("| --- | --- | --- | --- |")
        for name, values in rows.items():
            print(
                f"| {name} | {statistics.median(n / t for t, _, _ in values):.0f} | "
                f"{statistics.median(c for _, c, _ in values) / n * 1e3:.2f} | "
                f"{statistics.median(o for _, _, o in values) / n * 1e3:.2f} |"
            )

        print("\n| our C-GET, CPU by thread | associations | median ms per instance |")
        print("| --- | --- | --- |")
        for (w, kind), values in sorted(threads.items()):
            print(f"| {kind} | {w} | {statistics.median(values) / n * 1e3:.3f} |")

        if args.process_pair:
            process_pair(pull, work, n, args.repeats)

        if args.profile:
            print(f"\n## cProfile ({args.clock} time) of one C-GET pull, per thread; load {os.getloadavg()[0]:.2f}")
            print(profile_run(pull, work / "idx", work / "profiled", n, args.top, args.clock))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
