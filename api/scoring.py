"""The scorer behind POST /v1/scores: the CURRENT acquisition model, batch rows first.

`fusion.served_scores.ServingScorer` holds the product logic (which stored rows hold, live
scoring of the rest); this module only splits the work between the event loop and a thread:
an answer the stored rows give as they are is returned on the loop, anything that needs a
reload or a live score runs in the thread pool, so that one live request never holds up the
lookups queued behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.concurrency import run_in_threadpool

from fusion.runfolder import RunFolder
from fusion.served_scores import ServedScores, ServingScorer

__all__ = ["CurrentScorer"]


class CurrentScorer:
    """The scorer of whichever acquisition model version is CURRENT at each request."""

    def __init__(self, folder: RunFolder) -> None:
        self._serving = ServingScorer(folder, "acquisition")

    async def score(self, customer_ids: Sequence[int]) -> ServedScores:
        """Return the scores of `customer_ids`: stored on the loop, live in a thread."""
        answered = self._serving.answer(customer_ids)
        if answered is not None:
            return answered
        return await run_in_threadpool(self._serving.score, customer_ids)

    def refresh(self) -> None:
        """Read the run folder afresh at the next request: this service just moved a CURRENT."""
        self._serving.refresh()
