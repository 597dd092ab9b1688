"""Masked greedy choices read straight from llama.cpp's logits buffer (no full-width row is built).

A decode step needs one number from a logits row: the allowed id with the largest logit. Building
an original-width row (262,144 floats for Gemma 3, widened from an audio head's kept rows) and
masking all of it costs more than the rest of a draft-verification step's Python; the allowed
sets, though, are a handful of fixed masks (the codec's per-layer tables), so each is turned once
into the ascending row indices it allows and the choice is an argmax over those logits only.

The result equals `runtime.draft.masked_argmax` on the widened row: the same maximum, and the
lowest id on ties, because row indices ascend with the original ids (an audio head keeps its rows
in ascending id order). No llama_cpp here: `FrozenLM.argmax_rows` hands in the buffer's rows.
"""
from __future__ import annotations

import numpy as np

from runtime.lm_errors import HeadVocabularyError

__all__ = ["MaskedChooser"]

_CACHE_LIMIT = 256  # distinct masks remembered; a per-step mask built fresh each time just misses


class MaskedChooser:
    """Masked argmax over rows in the model's row space.

    global_ids / local_ids: an audio head's `HeadMap.global_ids` (the ascending original id of
    each row) and `HeadMap.local_ids` (the row of each original id, -1 where dropped); both None
    when rows are indexed by original id.
    """

    def __init__(self, global_ids: np.ndarray | None = None, local_ids: np.ndarray | None = None) -> None:
        if (global_ids is None) != (local_ids is None):
            raise ValueError("pass both global_ids and local_ids, or neither")
        self.global_ids = global_ids
        self._local = local_ids
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(mask) -> (mask kept alive, rows)

    def rows_of(self, mask: np.ndarray) -> np.ndarray:
        """The ascending row indices that bool ``mask`` (V,) allows (memoised per mask object)."""
        hit = self._cache.get(id(mask))
        if hit is not None and hit[0] is mask:
            return hit[1]
        ids = np.flatnonzero(mask)
        rows = ids if self._local is None else self._local[ids]
        if rows.size and rows.min() < 0:
            raise HeadVocabularyError("the allowed ids include ids the audio-head GGUF dropped: use the full "
                                      "GGUF or rebuild the head for this codec bundle")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[id(mask)] = (mask, rows)
        return rows

    def pick(self, row: np.ndarray, mask: np.ndarray | None) -> int:
        """The original id of the largest logit of ``row`` (K,) among ``mask``'s ids (lowest on ties).

        mask None: every row (on an audio head that is every *kept* id; callers check masks first)."""
        if mask is None:
            j = int(np.argmax(row))
        else:
            rows = self.rows_of(mask)
            j = int(rows[int(np.argmax(row[rows]))])
        return j if self.global_ids is None else int(self.global_ids[j])
