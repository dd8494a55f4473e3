"""Micro-batching: concurrent predictions share one forward pass.

On a CPU a forward pass at batch 8 costs far less than eight at batch 1, and a server's
requests arrive one at a time. Each caller decodes its file in its own thread (in parallel
with the others and with the model), then queues the canonical tensor; one worker thread
stacks what is waiting (up to ``max_batch_size``), runs one forward pass and hands each
caller its own row. A decode error stays in its caller's thread; a forward error reaches
exactly the callers of that batch. The only lock held across the forward pass is the
Predictor's own (:meth:`Predictor.probabilities_canonical`).

The worker never waits when nobody else is coming: it waits (at most ``max_wait_s``) only
for callers that are decoding right now (:meth:`MicroBatcher.preparing`), so a lone client
pays nothing for batching.

A batched row can differ from :meth:`Predictor.predict`'s in the last bits (the kernels sum
in another order for another batch size): on the test split's 315 slices, batches of 2 to 32,
the shipped model's probabilities moved by 2.7e-7 at most and no top class changed
(``bench/batching.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import torch

from lungdemo.errors import LungdemoError
from lungdemo.ood import OODResult
from lungdemo.predictor import Prediction, Predictor
from lungdemo.preprocessing import decode_canonical

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 16
"""Slices per shared forward pass: past 16 the per-slice cost hardly falls and the wait grows."""
DEFAULT_MAX_WAIT_S = 0.005
"""How long the worker waits for callers still decoding (about one slice's decode time)."""

R = TypeVar("R")


class BatcherClosedError(LungdemoError, RuntimeError):
    """A request reached a batcher that has been closed (the server is stopping)."""


@dataclass(eq=False)
class _Job(Generic[R]):
    item: torch.Tensor
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


class Ticket(Generic[R]):
    """A caller that has announced a tensor (see :meth:`MicroBatcher.preparing`)."""

    def __init__(self, batcher: MicroBatcher[R]) -> None:
        self._batcher = batcher
        self.submitted = False

    def submit(self, item: torch.Tensor) -> R:
        """Queue ``item`` and wait for its result (at most once per ticket)."""
        if self.submitted:
            raise RuntimeError("this ticket has already been used")
        self.submitted = True
        return self._batcher._run(item, announced=True)


class MicroBatcher(Generic[R]):
    """One worker thread running ``forward`` on stacks of queued tensors.

    ``forward`` takes a batch (the items stacked on a new first dimension) and returns one
    result per item, in order. Items are batched only with items of the same shape and dtype.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], Sequence[R]],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        name: str = "lungdemo-batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be at least 0, got {max_wait_s}")
        self._forward = forward
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self._cond = threading.Condition()
        self._queue: deque[_Job[R]] = deque()
        self._announced = 0
        self._closed = False
        self._batch_sizes: Counter[int] = Counter()
        self._name = name
        self._thread: threading.Thread | None = None  # started by the first item: idle batchers cost no thread

    # --- callers ----------------------------------------------------------------------
    def run(self, item: torch.Tensor) -> R:
        """Queue ``item``, wait, and return its result (or raise the forward pass's error)."""
        return self._run(item, announced=False)

    @contextmanager
    def preparing(self) -> Iterator[Ticket[R]]:
        """Announce a tensor that is being made (decoded): the worker may wait for it.

        ``with batcher.preparing() as ticket: result = ticket.submit(decode(...))``; leaving
        the block without submitting (the decode failed) withdraws the announcement.
        """
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the batcher is closed")
            self._announced += 1
        ticket: Ticket[R] = Ticket(self)
        try:
            yield ticket
        finally:
            if not ticket.submitted:
                with self._cond:
                    self._announced -= 1
                    self._cond.notify_all()

    @property
    def queued(self) -> int:
        """Items waiting for a forward pass (not counting the one running)."""
        with self._cond:
            return len(self._queue)

    @property
    def batch_sizes(self) -> Counter[int]:
        """Forward passes run so far, by batch size (a copy)."""
        with self._cond:
            return Counter(self._batch_sizes)

    @property
    def forward_calls(self) -> int:
        return sum(self.batch_sizes.values())

    def _run(self, item: torch.Tensor, *, announced: bool) -> R:
        job: _Job[R] = _Job(item)
        with self._cond:
            if announced:
                self._announced -= 1
            if self._closed:
                self._cond.notify_all()
                raise BatcherClosedError("the batcher is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    # --- the worker -------------------------------------------------------------------
    def _take(self) -> list[_Job[R]] | None:
        """The next batch: what is queued, after waiting briefly for announced callers."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            if self._announced and len(self._queue) < self.max_batch_size and self.max_wait_s > 0:
                deadline = time.monotonic() + self.max_wait_s
                while self._announced and len(self._queue) < self.max_batch_size and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            head = self._queue[0].item
            batch: list[_Job[R]] = []
            rest: deque[_Job[R]] = deque()
            while self._queue:
                job = self._queue.popleft()
                fits = job.item.shape == head.shape and job.item.dtype == head.dtype
                (batch if fits and len(batch) < self.max_batch_size else rest).append(job)
            self._queue = rest
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                results = self._forward(torch.stack([job.item for job in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"forward returned {len(results)} results for a batch of {len(batch)}")
            except BaseException as exc:  # every caller of this batch must hear of it, or it waits forever
                logger.exception("forward pass failed for a batch of %d", len(batch))
                for job in batch:
                    job.error = exc
                    job.done.set()
                continue
            with self._cond:
                self._batch_sizes[len(batch)] += 1
            for job, result in zip(batch, results, strict=True):
                job.result = result
                job.done.set()

    # --- shutdown ---------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Refuse new items, finish the queued ones, stop the worker (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running (it starts with the first item, stops after :meth:`close`)."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> MicroBatcher[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchedPredictor:
    """:meth:`Predictor.predict` for concurrent callers, sharing forward passes.

    Decoding runs in the caller's thread; the forward pass is the Predictor's own
    :meth:`~Predictor.probabilities_canonical`, so normalisation, lock and temperature are
    the ones every other path uses.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.predictor = predictor
        self.batcher: MicroBatcher[tuple[list[float], OODResult | None]] = MicroBatcher(
            predictor.forward_canonical, max_batch_size=max_batch_size, max_wait_s=max_wait_s
        )

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    def predict(self, source: bytes | str | Path) -> Prediction:
        """What :meth:`Predictor.predict` returns for ``source`` (to the last bits, see the module)."""
        return self.predict_with_input(source)[0]

    def predict_with_input(self, source: bytes | str | Path) -> tuple[Prediction, torch.Tensor]:
        """:meth:`predict` and the canonical slice the model saw (``uint8`` ``(1, H, W)``), for reuse."""
        with self.batcher.preparing() as ticket:
            canon, info = decode_canonical(source, self.predictor.cfg)
            probs, result = ticket.submit(canon)
        return self.predictor.prediction(probs, info.notes, result), canon

    def close(self, timeout: float | None = None) -> None:
        self.batcher.close(timeout)
