"""File helpers shared by the stages: atomic writes, grey-image loading, missing-value test.

One temporary-name scheme for every atomic write: ``.<name>.tmp-<pid>`` next to the target (hidden,
so a glob for ``*.parquet`` or ``*.csv`` never picks up a half-written file, and per process, so two
writers never share a temporary file). A crash leaves at most such a hidden file, never a partial
target; :func:`atomic_write` removes it when the write raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy, pandas and PIL are imported where used: the ingest workers import this module
    import numpy as np
    from PIL.Image import Image

__all__ = ["IMAGE_SUFFIXES", "atomic_write", "gray_array", "is_missing", "load_gray", "temporary_name"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File suffixes read as ordinary (non-DICOM) images, lower case."""


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The temporary name an atomic write of ``path`` uses: ``<dir>/.<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` to write the whole file at :func:`temporary_name`, then rename it to
    ``path`` (``os.replace``, atomic on one file system). The temporary file is removed if ``write``
    or the rename raises; the exception propagates unchanged.
    """
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_missing(value: object) -> bool:
    """True for a missing scalar: None, ``float('nan')``, ``numpy.nan``, ``pd.NA``, ``pd.NaT``.

    ``pd.isna`` on one value; a list or array is never "missing" (``pd.isna`` would answer per element).
    """
    if value is None:
        return True
    if isinstance(value, str):  # the common case, answered without pandas
        return False
    from pandas import isna

    answer = isna(value)
    return answer if isinstance(answer, bool) else False


def gray_array(image: Image, *, box: tuple[int, int, int, int] | None = None, size: int | None = None) -> np.ndarray:
    """An open PIL image as ``(H, W) uint8`` luminance (PIL mode ``L``: colour -> ITU-R 601-2 luma).

    Args:
        image: an open ``PIL.Image.Image``.
        box: ``(left, top, right, bottom)`` crop in pixels, applied after the conversion.
        size: resize to ``size x size`` (PIL's default filter) after the crop.
    """
    import numpy as np

    gray = image.convert("L")
    if box is not None:
        gray = gray.crop(tuple(box))
    if size is not None:
        gray = gray.resize((size, size))
    return np.asarray(gray)


def load_gray(
    path: str | os.PathLike[str], *, box: tuple[int, int, int, int] | None = None, size: int | None = None
) -> np.ndarray:
    """Read a PNG/JPEG/BMP/TIFF file as ``(H, W) uint8`` luminance (see :func:`gray_array`).

    Raises:
        OSError: the file is missing or not an image PIL can decode (callers name the file in their
            own error type).
    """
    from PIL import Image

    with Image.open(path) as im:
        return gray_array(im, box=box, size=size)
