import re
import threading
import time
from multiprocessing.connection import Listener

import pytest

from cifarlab.web import explain_worker
from cifarlab.web.explain import ExplanationUnavailable, RemoteExplanations
from tests.helpers import image_bytes


class SlowExplanations:
    """Stands in for Grad-CAM: each heatmap takes 0.5 s."""

    def overlay(self, pixels, class_index):
        time.sleep(0.5)
        return f"data:image/png;base64,{class_index}"


@pytest.fixture
def worker(tmp_path):
    """The explain worker's loop on a socket, one request waiting at most; yields the socket path."""
    path = str(tmp_path / "explain.sock")
    listener = Listener(path, family="AF_UNIX", backlog=64)
    threading.Thread(target=explain_worker.serve, args=(SlowExplanations(), listener, 1), daemon=True).start()
    yield path
    listener.close()


def test_explanations_past_the_queue_are_refused_at_once_not_queued(worker):
    answers = []

    def ask(index):
        try:
            answers.append(RemoteExplanations(worker, timeout=10).overlay(None, index))
        except ExplanationUnavailable as exc:
            answers.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    done = [value for value in answers if isinstance(value, str)]
    busy = [exc for exc in answers if isinstance(exc, ExplanationUnavailable)]
    assert 2 <= len(done) <= 3 and len(done) + len(busy) == 6  # one computing, one waiting (at most one more later)
    # refused by the queue's bound, not timed out in it
    assert all(exc.status == 503 and "Too many explanations" in exc.message for exc in busy), [e.message for e in busy]


def test_a_worker_that_is_not_running_is_a_503_not_an_error(tmp_path):
    with pytest.raises(ExplanationUnavailable, match="starting or not running"):
        RemoteExplanations(str(tmp_path / "none.sock"), timeout=1).overlay(None, 0)


def test_a_slow_worker_is_a_503_after_the_timeout(worker):
    with pytest.raises(ExplanationUnavailable, match="longer than 0.1 s"):
        RemoteExplanations(worker, timeout=0.1).overlay(None, 0)


def test_the_app_sends_explanations_to_the_worker_and_answers_503_while_it_is_down(make_app, tmp_path):
    client = make_app(EXPLAIN_SOCKET=str(tmp_path / "none.sock")).test_client()
    html = client.post("/", data={"file": (__import__("io").BytesIO(image_bytes()), "a.png")}).get_data(as_text=True)
    link = re.search(r'class="explain-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    reply = client.get(link)
    assert reply.status_code == 503 and "starting or not running" in reply.get_data(as_text=True)
