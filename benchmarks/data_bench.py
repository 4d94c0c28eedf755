"""Training input speed: two-view batches/s from the cache vs decoding DICOM on the fly.

Both loaders use the same two-view transform (paper augmentation), the same batch size, the same
number of DataLoader workers and the same per-sample seeding; the only difference is where the
``(1, S, S)`` image comes from: a row of the memory-mapped cache, or pydicom decode + modality LUT
+ window + resize of the DICOM file, every epoch.

The DICOM files are generated: real images (../shared/data pool PNGs when present, else pydicom's
CT_small / MR_small) upsampled to 512 x 512, stored as 16-bit CT with rescale slope/intercept,
stored as ``--codecs`` in turn (default: a third each uncompressed, RLE Lossless and JPEG 2000
Lossless, a typical PACS export mix).

Both loaders keep their workers across epochs (``persistent_workers``, as ``build_pretrain_loader``);
after one untimed warm-up epoch each (worker start), the cache loader is timed over
``--cache-epochs`` epochs and the on-the-fly loader over ``--epochs`` epochs: steady-state rates, as
in a long pretraining run. The per-sample cost of each path in this process (no workers) is printed
too, to show how much of the DataLoader rate is the transfer of batches from the workers.

    .venv/bin/python benchmarks/data_bench.py --files 300 --workers 2 --batch-size 32 --epochs 3 --cache-epochs 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from modan_pacs.data import build_pretrain_loader, sample_seed, two_view_transform, views_to_float
from modan_pacs.data.datasets import EpochSampler
from modan_pacs.ingest import build_index
from modan_pacs.paths import shared_data_dir
from modan_pacs.pixels import load_cache
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index
from modan_pacs.pixels.decode import display_frames, fit_square, read_dicom_frames, to_uint8


def source_images(n: int) -> list[np.ndarray]:
    from PIL import Image

    data = shared_data_dir()
    if data is not None:
        paths = sorted((data / "pool_mr_brain_figshare").glob("*.png"))[:n]
        return [np.asarray(Image.open(p).convert("L").resize((512, 512)), dtype=np.float64) for p in paths]
    import pydicom
    from pydicom.data import get_testdata_file

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    base = np.asarray(Image.fromarray(base.astype(np.float32), mode="F").resize((512, 512)))
    return [np.roll(base, i, axis=1) for i in range(min(n, 50))]


CODECS = {"native": None, "rle": "1.2.840.10008.1.2.5", "j2k": "1.2.840.10008.1.2.4.90"}


def write_dicom_set(folder: Path, n_files: int, codecs: tuple[str, ...] = ("native", "rle", "j2k")) -> pd.DataFrame:
    """``n_files`` CT DICOM files (codecs in turn) and an index frame in the contract's columns."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = source_images(n_files)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for i in range(n_files):
        img = sources[i % len(sources)]
        stored = np.clip(img / 255.0 * 1400.0, 0, 4095).astype(np.uint16)  # HU = stored - 1024
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = (
            ds.file_meta.MediaStorageSOPClassUID,
            ds.file_meta.MediaStorageSOPInstanceUID,
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series
        ds.Modality, ds.BodyPartExamined = "CT", "HEAD"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 512, 512, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = stored.tobytes()
        codec = CODECS[codecs[i % len(codecs)]]
        if codec is not None:
            ds.compress(codec)
        path = folder / f"img{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        rows.append(
            {
                "sop_instance_uid": ds.SOPInstanceUID,
                "series_instance_uid": f"{series}.{i}",
                "modality": "CT",
                "number_of_frames": 1,
                "path": str(path),
                "location": None,
                "modality_label": "CT",
                "anatomy_label": "brain",
            }
        )
    return pd.DataFrame(rows)


class OnTheFlyDataset(Dataset):
    """Decode the DICOM file of each sample every time (what the cache avoids)."""

    def __init__(
        self,
        paths: list[str],
        labels: np.ndarray,
        size: int,
        view_size: int,
        seed: int,
        window: tuple[float, float],
        view_dtype: str,
    ):
        self.paths, self.labels, self.size, self.seed, self.window = paths, labels, size, seed, window
        self.transform = two_view_transform(view_size, drop_source=True, view_dtype=view_dtype)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)  # EpochSampler yields (epoch, i)
        decoded, raw = read_dicom_frames(self.paths[i], "middle")
        image = fit_square(display_frames(decoded, window=self.window, raw=raw)[0], self.size)
        image = to_uint8(image)[None]  # same quantisation as the cache; the transform reads uint8 as x / 255
        self.transform.set_random_state(seed=sample_seed(self.seed, epoch, i))
        record = {"image": torch.from_numpy(image), "labels": torch.from_numpy(np.array(self.labels[i])), "index": i}
        return self.transform(record)


def time_loader(loader, epochs: int, first_epoch: int = 0) -> tuple[float, int]:
    """Seconds and batches for ``epochs`` epochs; every batch's views are made float32 in this
    process (``views_to_float``), as the trainer receives them, whatever dtype crossed from the workers."""
    n = 0
    start = time.perf_counter()
    for epoch in range(first_epoch, first_epoch + epochs):
        loader.sampler.set_epoch(epoch)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        else:
            loader.dataset.epoch = epoch
        for batch in loader:
            views_to_float(batch["view1"]), views_to_float(batch["view2"])
            n += 1
    return time.perf_counter() - start, n


def per_sample_ms(get, n: int) -> float:
    """Mean ms of ``get(i)`` over ``n`` samples in this process (no DataLoader, no IPC)."""
    get(0)
    t0 = time.perf_counter()
    for i in range(n):
        get(i)
    return (time.perf_counter() - t0) / n * 1e3


def measure(args: argparse.Namespace, cache, fly_paths: list[str], view_dtype: str):
    """Time the cache loader and the on-the-fly loader with views handed over as ``view_dtype``."""
    cached = build_pretrain_loader(
        cache, batch_size=args.batch_size, size=args.view_size, workers=args.workers, seed=0, view_dtype=view_dtype
    )
    fly_ds = OnTheFlyDataset(
        fly_paths, cache.labels, args.size, args.view_size, seed=0, window=(40.0, 80.0), view_dtype=view_dtype
    )
    # the loader settings of build_pretrain_loader: same sampler (epoch with each index), persistent workers
    sampler = EpochSampler(fly_ds, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    on_the_fly = DataLoader(
        fly_ds,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=cached.persistent_workers,
        pin_memory=cached.pin_memory,
    )

    # same images either way (cache rows are the on-the-fly images, quantised identically)
    same = all(
        torch.equal(fly_ds[(e, i)][key], cached.dataset[(e, i)][key])
        for e in (0, 1)
        for i in (0, 1, 2)
        for key in ("view1", "view2")
    )

    print(f"load average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # one untimed warm-up epoch each starts the persistent workers (once per training run)
    warm_cache_s, _ = time_loader(cached, 1)
    warm_fly_s, _ = time_loader(on_the_fly, 1)
    print(
        f"warm-up epoch (worker start + 1 epoch, not timed below): "
        f"cache {warm_cache_s:.2f} s, on the fly {warm_fly_s:.2f} s"
    )
    cache_s, cache_batches = time_loader(cached, args.cache_epochs, first_epoch=1)
    fly_s, fly_batches = time_loader(on_the_fly, args.epochs, first_epoch=1)
    cache_rate, fly_rate = cache_batches / cache_s, fly_batches / fly_s
    print(f"identical views from both paths (samples 0-2, epochs 0-1): {same}")
    print(
        f"from cache : {cache_batches} batches in {cache_s:.2f} s = {cache_rate:.2f} batches/s "
        f"({cache_rate * args.batch_size:.0f} images/s)"
    )
    print(
        f"on the fly : {fly_batches} batches in {fly_s:.2f} s = {fly_rate:.2f} batches/s "
        f"({fly_rate * args.batch_size:.0f} images/s)"
    )
    print(
        f"speed-up   : {cache_rate / fly_rate:.1f}x (batch {args.batch_size}, views {args.view_size}, "
        f"{args.workers} workers, {args.cache_epochs} / {args.epochs} epochs)"
    )
    print(f"load average after timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return cached.dataset, fly_ds  # (the loaders and their workers end here)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="cache side")
    parser.add_argument("--view-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of the on-the-fly loader")
    parser.add_argument(
        "--cache-epochs",
        type=int,
        default=10,
        help="timed epochs of the cache loader (it is ~10x faster: a longer, steadier window)",
    )
    parser.add_argument("--codecs", default="native,rle,j2k", help="comma list of: " + ", ".join(CODECS))
    parser.add_argument(
        "--view-dtypes",
        nargs="+",
        default=["uint8", "float32"],
        choices=["uint8", "float32"],
        help=(
            "dtype of the views the workers hand over (the loader's default is uint8); "
            "each is measured, both loaders alike"
        ),
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        codecs = tuple(c.strip() for c in args.codecs.split(","))
        write_dicom_set(tmp / "dicom", args.files, codecs)
        # the real path: index the generated export, then cache it
        build_index(tmp / "dicom", tmp / "index", workers=args.workers, salt_file=tmp / "salt")
        print(
            f"generated {args.files} DICOM files (512x512 CT, codecs {args.codecs}) in {time.perf_counter() - t0:.1f} s"
        )

        t0 = time.perf_counter()
        build_cache_from_index(
            tmp / "index", tmp / "cache", CacheSettings(size=args.size, series_volumes=False), workers=args.workers
        )
        build_s = time.perf_counter() - t0
        cache = load_cache(tmp / "cache")
        print(
            f"cache build: {len(cache)} images in {build_s:.1f} s "
            f"({len(cache) / build_s:.0f} images/s, {args.workers} workers)"
        )

        index_paths = pd.read_parquet(tmp / "index" / "index.parquet", columns=["path"])["path"].to_numpy()
        fly_paths = [str(index_paths[i]) for i in cache.manifest["index_row"]]  # cache row order
        for view_dtype in args.view_dtypes:
            print(f"--- views handed over as {view_dtype} (made float32 in the main process, as the trainer does) ---")
            cached_ds, fly_ds = measure(args, cache, fly_paths, view_dtype)
        # where the time goes, per sample, in this process (no workers, no batching), with the last
        # measured dtype: the DataLoader rate above is bounded by these plus the transfer of each batch
        n = min(64, len(cache))
        cache_ms = per_sample_ms(lambda i: cached_ds[(0, i)], n)
        fly_ms = per_sample_ms(lambda i: fly_ds[(0, i)], n)
        print(
            f"per sample in-process: cache {cache_ms:.2f} ms (two-view augmentation of a cached row), "
            f"on the fly {fly_ms:.2f} ms (decode + window + resize + the same augmentation): "
            f"ratio {fly_ms / cache_ms:.1f}x"
        )


if __name__ == "__main__":
    main()
