"""Stage 4: decode DICOM pixels once (pydicom + pylibjpeg plugins, SimpleITK for series), window,
and cache them as memory-mappable fixed-size arrays with a manifest (see docs/ARCHITECTURE.md)."""

from modan_pacs.pixels.cache import ImageCache, load_cache, write_cache, write_errors

__all__ = ["ImageCache", "load_cache", "write_cache", "write_errors"]
