"""Micro-batching: concurrent callers share forward passes and each gets its own answer.

The forward pass is gated in the batching tests: the first pass blocks until the test has
queued the other callers, so the batches that form are known, not left to thread timing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from lungdemo.batching import BatchedPredictor, BatcherClosedError, MicroBatcher
from lungdemo.decode import ImageDecodeError
from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.predictor import Predictor
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.test_predict import EXAMPLES, varied_images

TOLERANCE = 1e-6  # a batched forward pass may sum in another order than a single one
WAIT_S = 30.0  # a guard against hanging, never reached when the code works


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a state another thread changes (not a timer): fail instead of hanging."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


class Gate:
    """Wraps a forward function; its first call blocks until :meth:`open`."""

    def __init__(self, forward: Callable[[torch.Tensor], Sequence]) -> None:
        self.forward = forward
        self.entered = threading.Event()
        self._open = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, batch: torch.Tensor) -> Sequence:
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self._open.wait(WAIT_S)
        return self.forward(batch)

    def open(self) -> None:
        self._open.set()


def sums(batch: torch.Tensor) -> list[float]:
    return batch.flatten(1).sum(1).tolist()


def item(value: float, side: int = 4) -> torch.Tensor:
    return torch.full((1, side, side), float(value))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_ref(make_model_folder(tmp_path_factory.mktemp("m") / "model", temperature=1.7))


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [*EXAMPLES, *varied_images(tmp_path)]


def assert_same_prediction(got, want) -> None:
    assert list(got.probabilities) == list(want.probabilities) == TEST_CLASSES
    for cls in TEST_CLASSES:
        assert abs(got.probabilities[cls] - want.probabilities[cls]) <= TOLERANCE
    assert got.notes == want.notes


def queue_behind_gate(batcher: MicroBatcher, gate: Gate, pool: ThreadPoolExecutor, items: Sequence) -> list[Future]:
    """One call into the gated first pass, then ``items`` queued behind it; returns all futures."""
    first = pool.submit(batcher.run, items[0])
    assert gate.entered.wait(WAIT_S)
    rest = [pool.submit(batcher.run, x) for x in items[1:]]
    wait_for(lambda: batcher.queued == len(items) - 1)
    return [first, *rest]


# --- the batcher --------------------------------------------------------------------------


def test_waiting_callers_share_one_forward_pass() -> None:
    gate = Gate(sums)
    with MicroBatcher(gate, max_batch_size=16) as batcher, ThreadPoolExecutor(8) as pool:
        futures = queue_behind_gate(batcher, gate, pool, [item(i) for i in range(8)])
        gate.open()
        assert [f.result(WAIT_S) for f in futures] == [16.0 * i for i in range(8)]
        assert gate.sizes == [1, 7]
        assert batcher.forward_calls == 2
        assert batcher.batch_sizes == Counter({1: 1, 7: 1})


def test_batches_are_at_most_max_batch_size_and_keep_order() -> None:
    gate = Gate(sums)
    with MicroBatcher(gate, max_batch_size=4) as batcher, ThreadPoolExecutor(11) as pool:
        futures = queue_behind_gate(batcher, gate, pool, [item(i) for i in range(11)])
        gate.open()
        assert [f.result(WAIT_S) for f in futures] == [16.0 * i for i in range(11)]
    assert gate.sizes == [1, 4, 4, 2]


def test_items_of_other_shapes_go_in_their_own_batch() -> None:
    gate = Gate(sums)
    shapes = [4, 4, 3, 4, 3]
    with MicroBatcher(gate) as batcher, ThreadPoolExecutor(5) as pool:
        futures = queue_behind_gate(batcher, gate, pool, [item(1, side) for side in shapes])
        gate.open()
        assert [f.result(WAIT_S) for f in futures] == [float(side * side) for side in shapes]
    assert gate.sizes == [1, 2, 2]  # the 4x4 pair behind the gate, then the two 3x3


def test_a_forward_error_reaches_the_callers_of_that_batch_only() -> None:
    def forward(batch: torch.Tensor) -> list[float]:
        if (batch < 0).any():
            raise ValueError("negative input")
        return sums(batch)

    gate = Gate(forward)
    with MicroBatcher(gate, max_batch_size=3) as batcher, ThreadPoolExecutor(7) as pool:
        futures = queue_behind_gate(batcher, gate, pool, [item(v) for v in (1, 2, -1, 3, 4, 5, 6)])
        gate.open()
        assert futures[0].result(WAIT_S) == 16.0
        for f in futures[1:4]:  # the batch (2, -1, 3)
            with pytest.raises(ValueError, match="negative input"):
                f.result(WAIT_S)
        assert [f.result(WAIT_S) for f in futures[4:]] == [64.0, 80.0, 96.0]
        assert batcher.run(item(7)) == 112.0  # the worker lives on
    assert gate.sizes == [1, 3, 3, 1]


def test_a_forward_returning_the_wrong_count_is_an_error_not_a_hang() -> None:
    with (
        MicroBatcher(lambda batch: [0.0] * (len(batch) + 1)) as batcher,
        pytest.raises(RuntimeError, match="2 results for a batch of 1"),
    ):
        batcher.run(item(1))


def test_the_worker_waits_for_announced_callers_and_not_for_withdrawn_ones() -> None:
    gate = Gate(sums)
    # a wait far longer than the test: the worker goes on because the announcements end
    with MicroBatcher(gate, max_wait_s=600.0) as batcher, ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.run, item(1))
        assert gate.entered.wait(WAIT_S)
        with batcher.preparing() as ticket:
            second = pool.submit(batcher.run, item(2))
            wait_for(lambda: batcher.queued == 1)
            gate.open()
            assert first.result(WAIT_S) == 16.0
            assert batcher.queued == 1  # held back: an announced item is on its way
            assert ticket.submit(item(3)) == 48.0
        assert second.result(WAIT_S) == 32.0
        assert gate.sizes == [1, 2]

        with batcher.preparing():  # announced, then withdrawn (its decode failed)
            third = pool.submit(batcher.run, item(4))
            wait_for(lambda: batcher.queued == 1)
        assert third.result(WAIT_S) == 64.0
        assert gate.sizes == [1, 2, 1]


def test_a_ticket_submits_once() -> None:
    with MicroBatcher(sums) as batcher, batcher.preparing() as ticket:
        assert ticket.submit(item(1)) == 16.0
        with pytest.raises(RuntimeError, match="already been used"):
            ticket.submit(item(1))


def test_close_finishes_queued_items_then_refuses_new_ones() -> None:
    gate = Gate(sums)
    batcher = MicroBatcher(gate)
    with ThreadPoolExecutor(5) as pool:  # four callers and close()
        futures = queue_behind_gate(batcher, gate, pool, [item(i) for i in range(4)])
        closing = pool.submit(batcher.close)
        wait_for(lambda: batcher.closed)
        with pytest.raises(BatcherClosedError):
            batcher.run(item(9))
        with pytest.raises(BatcherClosedError), batcher.preparing():
            pass
        gate.open()
        assert [f.result(WAIT_S) for f in futures] == [0.0, 16.0, 32.0, 48.0]
        closing.result(WAIT_S)
    assert not batcher.alive
    batcher.close()  # idempotent


def test_a_ticket_announced_before_close_is_refused_on_submit() -> None:
    batcher = MicroBatcher(sums)
    with batcher.preparing() as ticket:
        batcher.close(WAIT_S)
        with pytest.raises(BatcherClosedError):
            ticket.submit(item(1))
    assert not batcher.alive


def test_the_worker_starts_with_the_first_item() -> None:
    batcher = MicroBatcher(sums)
    assert not batcher.alive  # a demo that never classifies holds no thread
    assert batcher.run(item(1)) == 16.0
    assert batcher.alive
    batcher.close(WAIT_S)
    assert not batcher.alive


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(sums, max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(sums, max_wait_s=-1)


# --- the batched predictor ---------------------------------------------------------------


def test_concurrent_callers_get_their_own_predictions(predictor: Predictor, images: list[Path]) -> None:
    sources: list[Path | bytes] = [*images, *(p.read_bytes() for p in images)] * 2
    expected = [predictor.predict(s) for s in sources]
    batched = BatchedPredictor(predictor, max_batch_size=8)
    start = threading.Barrier(len(sources))

    def call(source: Path | bytes):
        start.wait(WAIT_S)
        return batched.predict(source)

    try:
        with ThreadPoolExecutor(len(sources)) as pool:
            got = list(pool.map(call, sources))
    finally:
        batched.close(WAIT_S)
    for g, want in zip(got, expected, strict=True):
        assert_same_prediction(g, want)
    assert sum(size * n for size, n in batched.batcher.batch_sizes.items()) == len(sources)


class GatedPredictor(Predictor):
    """A Predictor whose first forward pass waits for the test (to form known batches)."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__(predictor.loaded)
        self.gate = Gate(super().probabilities_canonical)

    def probabilities_canonical(self, canon: torch.Tensor) -> torch.Tensor:
        return self.gate(canon)


def test_batched_predictions_equal_single_ones_and_share_passes(predictor: Predictor, images: list[Path]) -> None:
    gated = GatedPredictor(predictor)
    batched = BatchedPredictor(gated, max_batch_size=16)
    try:
        with ThreadPoolExecutor(len(images)) as pool:
            first = pool.submit(batched.predict, images[0])
            assert gated.gate.entered.wait(WAIT_S)
            rest = [pool.submit(batched.predict, p) for p in images[1:]]
            wait_for(lambda: batched.batcher.queued == len(images) - 1)
            gated.gate.open()
            got = [f.result(WAIT_S) for f in [first, *rest]]
    finally:
        batched.close(WAIT_S)
    assert gated.gate.sizes == [1, len(images) - 1]
    for g, path in zip(got, images, strict=True):
        assert_same_prediction(g, predictor.predict(path))


def test_a_failing_decode_affects_only_its_caller(predictor: Predictor, images: list[Path]) -> None:
    gated = GatedPredictor(predictor)
    batched = BatchedPredictor(gated)
    bad = [b"", b"not an image at all", images[0].read_bytes()[:200]]
    try:
        with ThreadPoolExecutor(len(images) + len(bad)) as pool:
            first = pool.submit(batched.predict, images[0])
            assert gated.gate.entered.wait(WAIT_S)
            good = [pool.submit(batched.predict, p) for p in images[1:]]
            wait_for(lambda: batched.batcher.queued == len(images) - 1)
            for data in bad:  # refused at once in their own threads, while the model is busy
                with pytest.raises(ImageDecodeError):
                    pool.submit(batched.predict, data).result(WAIT_S)
            gated.gate.open()
            got = [f.result(WAIT_S) for f in [first, *good]]
    finally:
        batched.close(WAIT_S)
    assert gated.gate.sizes == [1, len(images) - 1]
    for g, path in zip(got, images, strict=True):
        assert_same_prediction(g, predictor.predict(path))


@pytest.mark.skipif(not SHIPPED_MODEL_DIR.is_dir(), reason="no shipped model in this checkout")
def test_shipped_model_on_real_test_slices(data_dir: Path) -> None:
    """The shipped model on real slices of the test split, 16 callers at once."""
    shipped = Predictor.from_ref(SHIPPED_MODEL_DIR)
    slices = sorted((data_dir / "test").rglob("*.png"))[::20][:16]
    assert len(slices) == 16
    expected = [shipped.predict(p) for p in slices]
    batched = BatchedPredictor(shipped)
    try:
        with ThreadPoolExecutor(len(slices)) as pool:
            got = list(pool.map(batched.predict, slices))
    finally:
        batched.close(WAIT_S)
    for g, want in zip(got, expected, strict=True):
        assert_same_prediction(g, want)
        assert g.top_class == want.top_class
