"""Prepare the next batches on a background thread while the device runs the current step.

One producer thread and a bounded queue rather than a loader such as ``grain``: the batches come from arrays in
memory, drawn with the run's one ``numpy`` generator, whose state every checkpoint saves so that a resumed run
draws the same batches bit for bit; ``numpy`` and ``jax.device_put`` release the GIL, so they overlap the step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate over ``make(0), ..., make(n - 1)``, computed in order on a background thread at most ``depth``
    items ahead. Leaving the context (also on an exception or a ``break``) stops and joins the producer, so
    nothing it uses (a random generator) changes afterwards; an exception raised by ``make`` is raised again in
    the consumer at the item that failed.

    Example:
        >>> with Prefetcher(lambda i: i * i, 4) as items:
        ...     list(items)
        [0, 1, 4, 9]
    """

    def __init__(self, make: Callable[[int], T], n: int, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._make, self._n = make, int(n)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="wage-train-batches", daemon=True)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return True
        return False

    def _produce(self) -> None:
        for i in range(self._n):
            if self._stop.is_set():  # not one more make(): it would draw from the run's generator
                return
            try:
                item: Any = self._make(i)
            except BaseException as e:  # handed to the consumer, which raises it
                self._put(_Failed(e))
                return
            if not self._put(item):
                return

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[T]:
        for _ in range(self._n):
            item = self._queue.get()
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
