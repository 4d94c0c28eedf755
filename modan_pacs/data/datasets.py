"""MONAI datasets over cache records and the pretraining DataLoader.

Reproducibility: the random state of the two-view transform is re-seeded for every sample from
``(seed, epoch, cache_row)`` (``numpy.random.SeedSequence``), so a sample's two views depend only
on those three numbers, not on the number of workers, the rank, or the order of loading. The
shuffling is a ``DistributedSampler`` seeded with ``seed`` and reshuffled by ``set_epoch``; with
``distributed=False`` it is the same sampler with one replica. Call :meth:`PretrainLoader.set_epoch`
before each epoch (it sets both the sampler's and the dataset's epoch).

Speed: the sampler yields ``(epoch, cache_row)`` pairs, so DataLoader workers learn the epoch from
the indices they are given and can stay alive across epochs (``persistent_workers=True``: no
re-forking per epoch). Cached rows stay ``uint8`` until the crop: only the cropped pixels are
converted to float (see :class:`~modan_pacs.data.transforms.RandResizedCrop`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader, DistributedSampler

from modan_pacs.data.batch_augment import ViewUniformsd
from modan_pacs.data.transforms import VIEW_DTYPES, two_view_transform
from modan_pacs.errors import InputError
from modan_pacs.pixels.cache import ImageCache, load_cache

__all__ = [
    "CacheRecordDataset",
    "EpochSampler",
    "PretrainLoader",
    "build_pretrain_loader",
    "cache_records",
    "sample_seed",
]


AUGMENT_ON = ("cpu", "device")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 32-bit seed of one sample's augmentation: a hash of ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0])


def cache_records(cache: ImageCache) -> list[dict[str, Any]]:
    """Plain records ``{"index": i}`` of a cache (pixels and labels are read lazily by index)."""
    return [{"index": i} for i in range(len(cache))]


class CacheRecordDataset(Dataset):
    """MONAI ``Dataset`` over cache rows: record ``i`` -> ``{"image", "labels", "index"}`` -> transform.

    ``image`` is ``(1, S, S)`` float32 in ``[0, 1]`` (cached uint8 / 255), ``labels`` ``(K,)`` float32,
    ``index`` the cache row. With ``uint8_input=True`` ``image`` is the cached ``uint8`` row instead;
    a transform must read uint8 as ``x / 255``, as :func:`~modan_pacs.data.transforms.two_view_transform`
    does (same views, less conversion work). Without a transform the record also carries ``epoch``
    (the epoch it was drawn for), which a batched augmentation on the device
    (:class:`~modan_pacs.data.batch_augment.BatchTwoViewAugment`) seeds itself from.
    When ``seed`` is given, a randomizable ``transform`` is re-seeded per sample with
    :func:`sample_seed` ``(seed, epoch, index)``; the epoch is :attr:`epoch`, or the one given with
    the index as ``dataset[(epoch, index)]``.
    """

    def __init__(
        self,
        cache: ImageCache,
        transform: Callable | None = None,
        seed: int | None = None,
        epoch: int = 0,
        *,
        uint8_input: bool = False,
    ) -> None:
        super().__init__(data=cache_records(cache), transform=None)
        self.transform = transform  # kept as given (MONAI would wrap it in a Compose, re-deriving seeds)
        self.uint8_input = bool(uint8_input)
        self.cache = cache
        self.seed = seed
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: Any) -> Any:
        """``dataset[i]`` at the current epoch, or ``dataset[(epoch, i)]`` (what :class:`EpochSampler` yields)."""
        if isinstance(index, tuple) and len(index) == 2:
            epoch, row = index
            return self._transform(int(row), int(epoch))
        return super().__getitem__(index)

    def _transform(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        image = torch.from_numpy(np.array(self.cache.images[index])[None])  # a writable copy of the uint8 row
        if not self.uint8_input:
            image = image.to(torch.float32).div_(255.0)
        record = {
            "image": image,  # (1, S, S): uint8 with uint8_input (scaled to [0, 1] after the crop), else float32
            "labels": torch.from_numpy(np.asarray(self.cache.labels[index], dtype=np.float32)),
            "index": int(index),
        }
        if self.transform is None:
            record["epoch"] = self.epoch if epoch is None else int(epoch)
            return record
        if self.seed is not None and hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=sample_seed(self.seed, self.epoch if epoch is None else epoch, index))
        return self.transform(record)


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` pairs instead of bare indices.

    The epoch travels with each index to the DataLoader workers, so the augmentation seed
    ``(seed, epoch, index)`` is right even in persistent workers that were forked epochs ago.
    """

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class PretrainLoader(DataLoader):
    """A ``DataLoader`` whose :meth:`set_epoch` reshuffles and re-seeds the augmentation."""

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for the sampler (shuffle) and the dataset (augmentation seeds)."""
        self.sampler.set_epoch(int(epoch))
        self.dataset.set_epoch(int(epoch))

    @property
    def epoch(self) -> int:
        return self.dataset.epoch


def _seed_worker(worker_id: int) -> None:
    """Seed the global RNGs of a worker from torch's per-worker seed (for any stray randomness)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def build_pretrain_loader(
    cache: ImageCache | str,
    *,
    batch_size: int,
    size: int,
    workers: int = 0,
    seed: int = 0,
    epoch_seed: int = 0,
    distributed: bool = False,
    drop_last: bool = True,
    pin_memory: bool | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    scale: Sequence[float] = (0.2, 1.0),
    flip_prob: float = 0.5,
    jitter_prob: float = 0.8,
    view_dtype: str = "uint8",
    augment_on: str = "cpu",
) -> PretrainLoader:
    """DataLoader of two-view batches from a cache.

    Yields ``{"view1": (B, 1, size, size), "view2": (B, 1, size, size), "labels": (B, K) float32,
    "index": (B,) int64}``. The views are ``uint8`` by default (``view_dtype``): workers hand over a
    quarter of the bytes of float32 views, and :func:`~modan_pacs.data.transforms.views_to_float`
    turns them into ``x / 255`` float32 on the training device (within half a grey level of the
    float32 views). ``view_dtype="float32"`` delivers float views.

    With ``augment_on="device"`` the workers only draw the views' random numbers: batches are
    ``{"image": (B, 1, S, S) uint8 cached images, "uniforms": (B, 2, DRAWS_PER_VIEW) float64,
    "labels", "index"}`` and :class:`~modan_pacs.data.batch_augment.BatchTwoViewAugment` makes the
    views on the device (the same views it would draw from ``index`` and the epoch).

    Args:
        cache: an :class:`~modan_pacs.pixels.ImageCache` or a cache folder.
        batch_size: per-process batch size.
        size: side of the views.
        workers: DataLoader worker processes (0 = load in the main process).
        seed: base seed of shuffling and augmentation.
        epoch_seed: the epoch the loader starts at (call ``set_epoch`` for later epochs).
        distributed: shard with ``DistributedSampler`` across the ranks of the initialised process
            group (or ``num_replicas`` / ``rank`` when given, e.g. in tests).
        drop_last: drop the last incomplete batch (and, under DDP, pad/drop so ranks get equal counts).
        pin_memory: pin host memory; ``None`` = when CUDA is available.
        scale, flip_prob, jitter_prob: the augmentation (see :func:`two_view_transform`).
        view_dtype: ``"uint8"`` (default) or ``"float32"`` views in the batches (``augment_on="cpu"``).
        augment_on: ``"cpu"`` (views made in the workers) or ``"device"`` (cached images handed over).

    Raises:
        InputError: bad batch size / size, empty cache, or ``distributed`` without a process group.
    """
    if isinstance(cache, (str,)) or hasattr(cache, "__fspath__"):
        cache = load_cache(cache)
    if batch_size < 1 or size < 1:
        raise InputError(f"batch_size and size must be >= 1; got batch_size={batch_size}, size={size}")
    if len(cache) == 0:
        raise InputError(f"cache {cache.path} has no images")
    if workers < 0:
        raise InputError(f"workers must be >= 0; got {workers}")
    if view_dtype not in VIEW_DTYPES:
        raise InputError(f"view_dtype must be one of {', '.join(VIEW_DTYPES)}; got {view_dtype!r}")
    if augment_on not in AUGMENT_ON:
        raise InputError(f"augment_on must be one of {', '.join(AUGMENT_ON)}; got {augment_on!r}")
    if augment_on == "cpu":
        transform = two_view_transform(
            size, tuple(scale), flip_prob, jitter_prob, drop_source=True, view_dtype=view_dtype
        )
    else:  # the workers draw the views' random numbers; the pixels are augmented on the device
        transform = ViewUniformsd(views=2)
    dataset = CacheRecordDataset(cache, transform=transform, seed=seed, epoch=epoch_seed, uint8_input=True)
    if distributed:
        if num_replicas is None or rank is None:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise InputError(
                    "distributed=True needs an initialised torch.distributed process group (run under torchrun)"
                )
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
    else:
        num_replicas, rank = 1, 0
    sampler = EpochSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch_seed)
    generator = torch.Generator()
    generator.manual_seed(sample_seed(seed, epoch_seed, -1 & 0xFFFFFFFF))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return PretrainLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=generator,
        persistent_workers=workers > 0,  # the epoch reaches the workers with each index (EpochSampler)
    )
