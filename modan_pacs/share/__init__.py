"""Stage 5 (optional): what may leave the hospital, from a local index and its cache.

Public API:
    share_dataset(*, index_dir, cache_dir, out, salt_file=None, overwrite=False) -> ShareReport
    SHARE_FILES, SHARE_MANIFEST_COLUMNS
"""

from modan_pacs.share.export import SHARE_FILES, SHARE_MANIFEST_COLUMNS, ShareReport, share_dataset

__all__ = ["SHARE_FILES", "SHARE_MANIFEST_COLUMNS", "ShareReport", "share_dataset"]
