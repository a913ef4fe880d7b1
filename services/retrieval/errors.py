"""Retrieval errors: subclasses of the platform's tree (``shopsense.errors``), so the root
command prints them as one line and exits 2, and the API can map them by their base class.

RetrievalError(ShopsenseError)
├── StoreUnavailable(UpstreamError)     Qdrant / OpenSearch unreachable or answering an error
│                                       (HTTP 502 from the API: the store behind it failed)
├── IndexLocked                         the local index is open in another process
├── IndexMismatch                       an existing collection/index has another layout
└── IndexingFailed                      a write failed; says which ids are where
``StoreUnavailable`` was called ``BackendUnavailable`` before; that name now belongs only to the
inference service's model-server error (a 503), so each name has one meaning and one status.
Bad requests (filters, modes, empty queries) raise ``shopsense.errors.InvalidInput``;
unreadable input files raise ``shopsense.errors.DataError``.
"""

from __future__ import annotations

from collections.abc import Sequence

from shopsense.errors import ShopsenseError, UpstreamError


class RetrievalError(ShopsenseError):
    pass


class StoreUnavailable(RetrievalError, UpstreamError):
    pass


class IndexLocked(RetrievalError):
    pass


class IndexMismatch(RetrievalError):
    pass


def _ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" … (+{len(ids) - limit})" if len(ids) > limit else "")


class IndexingFailed(RetrievalError):
    """A batch could not be written to both indexes.

    ``written``: ids now in both indexes (earlier batches, or items that succeeded);
    ``rolled_back``: ids of the failed batch, restored to their previous state in both indexes;
    ``inconsistent``: ids that may now differ between the two indexes (the rollback itself
    failed, or OpenSearch gave no per-item answer). They are recorded in the pending journal and
    are removed from both indexes by the next write (see ``HybridRetriever``).
    """

    def __init__(
        self,
        message: str,
        *,
        written: Sequence[str] = (),
        rolled_back: Sequence[str] = (),
        inconsistent: Sequence[str] = (),
    ) -> None:
        self.written = list(written)
        self.rolled_back = list(rolled_back)
        self.inconsistent = list(inconsistent)
        parts = [message]
        if self.written:
            parts.append(f"{len(self.written)} reviews were written to both indexes")
        if self.rolled_back:
            parts.append(f"{len(self.rolled_back)} rolled back ({_ids(self.rolled_back)})")
        if self.inconsistent:
            parts.append(
                f"{len(self.inconsistent)} may differ between the indexes "
                f"({_ids(self.inconsistent)}); the next index/delete run removes them from both"
            )
        super().__init__("; ".join(parts))
