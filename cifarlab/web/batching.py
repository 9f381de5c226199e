"""Batching across requests: the images of concurrent requests in one worker run as one forward pass.

A request alone in its worker runs its own pass at once, in its own thread. Otherwise its images join a queue; one
thread per model version takes what is queued, waits at most `window` seconds for the other requests in flight in
this worker to add theirs, and runs them together. Each request gets its own predictions back, or the forward pass's error.
"""
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class InFlight:
    """The number of requests being answered in this process now (what the batcher may wait for)."""

    def __init__(self):
        self.lock, self.count = threading.Lock(), 0

    def enter(self):
        with self.lock:
            self.count += 1

    def leave(self):
        with self.lock:
            self.count -= 1

    def __call__(self):
        return self.count


class Batcher:
    """predict(images) through one forward pass shared with the other requests that arrive within `window`."""

    def __init__(self, predict, window, max_images, in_flight, observe=None):
        self._predict, self.window, self.max_images = predict, window, max_images
        self.in_flight, self.observe = in_flight, observe or (lambda images: None)  # observe: images per pass
        self.jobs, self.lock, self.closed = queue.SimpleQueue(), threading.Lock(), False
        self.thread = threading.Thread(target=self._serve, name="batcher", daemon=True)
        self.thread.start()

    def predict(self, images):
        """[Prediction] for these images, computed with whatever else is queued now."""
        job = (np.asarray(images), Future())
        # alone in the worker (nobody to share a pass with, no hand-over to pay), or the version was unloaded while
        # this request held it: its own pass, here
        if self.in_flight() <= 1 or not self._enqueue(job):
            self.observe(len(job[0]))
            return self._predict(job[0])
        return job[1].result()

    def _enqueue(self, job):
        """Queue a job for the batching thread; False once closed."""
        with self.lock:
            if not self.closed:
                self.jobs.put(job)
            return not self.closed

    def close(self):
        """Stop the thread once the queued work is done (None, the stop mark, comes after every queued job)."""
        with self.lock:
            self.closed = True
            self.jobs.put(None)

    def _gather(self, first):
        """The first job plus those arriving within the window while other requests are in flight."""
        batch, rows = [first], len(first[0])
        deadline = time.monotonic() + self.window
        while rows < self.max_images and len(batch) < self.in_flight():
            remaining = deadline - time.monotonic()
            try:
                job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)
                break
            batch.append(job)
            rows += len(job[0])
        return batch

    def _serve(self):
        while (first := self.jobs.get()) is not None:
            batch = self._gather(first)
            try:
                predictions = self._predict(np.concatenate([images for images, _ in batch]))
            except BaseException as exc:  # handed to each waiting request, which raises it in its own thread
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.observe(len(predictions))
            start = 0
            for images, future in batch:
                future.set_result(predictions[start:start + len(images)])
                start += len(images)
