"""Batching across requests: concurrent requests share forward passes, each gets its own answers."""
import threading
import time

import numpy as np
import pytest

from cifarlab.web.batching import Batcher, InFlight


class Recorder:
    """A predict function that returns each image's first pixel and records the batch sizes it was called with."""

    def __init__(self, delay=0.0, fail=False):
        self.sizes, self.delay, self.fail = [], delay, fail

    def __call__(self, images):
        self.sizes.append(len(images))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("forward pass failed")
        return [int(image[0, 0, 0]) for image in images]


def images(*values):
    return np.stack([np.full((2, 2, 3), v, np.uint8) for v in values])


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_answers():
    recorder, in_flight = Recorder(delay=0.05), InFlight()
    batcher = Batcher(recorder, window=0.5, max_images=64, in_flight=in_flight)
    answers, start = {}, threading.Barrier(8)

    def request(i):
        in_flight.enter()
        start.wait()
        answers[i] = batcher.predict(images(i, i + 100))
        in_flight.leave()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join(5) for t in threads]
    assert answers == {i: [i, i + 100] for i in range(8)}
    assert sum(recorder.sizes) == 16 and len(recorder.sizes) < 8  # fewer passes than requests
    batcher.close()


def answer_in_time(call, patience=30.0):
    """call()'s result and the thread that called it; a call still waiting after patience seconds fails the test."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(patience)
    assert result, f"still waiting after {patience} s"
    return result[0], thread


def test_a_request_alone_runs_at_once_in_its_own_thread():
    threads = []
    recorder, in_flight = Recorder(), InFlight()
    batcher = Batcher(lambda x: threads.append(threading.current_thread()) or recorder(x), window=600.0,
                      max_images=64, in_flight=in_flight)  # a wait for the window would outlast the patience
    in_flight.enter()
    answer, caller = answer_in_time(lambda: batcher.predict(images(7)))
    assert answer == [7] and threads == [caller]
    batcher.close()


def test_the_window_bounds_the_wait_for_requests_that_never_come():
    recorder, in_flight = Recorder(), InFlight()
    batcher = Batcher(recorder, window=0.2, max_images=64, in_flight=in_flight)
    for _ in range(5):  # other requests in flight, but none of them predicts
        in_flight.enter()
    assert answer_in_time(lambda: batcher.predict(images(3)))[0] == [3]
    batcher.close()


def test_a_failed_pass_fails_each_of_its_requests_and_the_batcher_goes_on():
    recorder = Recorder(fail=True)
    in_flight = InFlight()
    in_flight.enter()
    in_flight.enter()  # another request in flight: this one goes through the batching thread
    batcher = Batcher(recorder, window=0.0, max_images=64, in_flight=in_flight)
    with pytest.raises(RuntimeError, match="forward pass failed"):
        batcher.predict(images(1))
    recorder.fail = False
    assert batcher.predict(images(2)) == [2]
    batcher.close()


def test_a_closed_batcher_still_answers_requests_that_held_it():
    recorder, seen, in_flight = Recorder(), [], InFlight()
    in_flight.enter()
    in_flight.enter()
    batcher = Batcher(recorder, window=0.0, max_images=64, in_flight=in_flight, observe=seen.append)
    batcher.close()
    batcher.thread.join(2)
    assert not batcher.thread.is_alive()
    assert batcher.predict(images(5, 6)) == [5, 6] and seen == [2]


def test_max_images_caps_a_pass():
    recorder, in_flight = Recorder(delay=0.05), InFlight()
    batcher = Batcher(recorder, window=0.5, max_images=4, in_flight=in_flight)
    start = threading.Barrier(6)

    def request(i):
        in_flight.enter()
        start.wait()
        batcher.predict(images(i, i))
        in_flight.leave()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join(5) for t in threads]
    assert sum(recorder.sizes) == 12 and max(recorder.sizes) <= 4 + 2  # stops gathering once 4 are in
    batcher.close()
