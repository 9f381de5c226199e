"""Under make serve with 2 workers: /metrics sums the workers, versions roll out under load without a failed request,
a broken version is refused, two models answer by name, request ids pass through nginx."""
import http.client
import json
import os
import re
import signal
import threading
import time

import pytest

from tests import helpers
from tests.helpers import image_bytes
from tests.test_serve import start_stack
from tests.test_registry import add_version
from tests.test_web_metrics import sample

pytestmark = pytest.mark.slow
POLL = 1.0  # seconds between the workers' looks at the model folder


@pytest.fixture(scope="module")
def versions_stack(tmp_path_factory, tiny_model_path):
    root = tmp_path_factory.mktemp("models")
    add_version(root, "cnn", 1)
    add_version(root, "tiny", 1, source=tiny_model_path)
    server, port = start_stack(tmp_path_factory, MODEL_DIR=str(root), MODEL_POLL_SECONDS=str(POLL),
                               SERVING_MODEL_NAME="cnn", WEB_WORKERS="2", WEB_THREADS="4", LOG_FORMAT="json")
    yield root, port, server
    helpers.stop_server(server)


def predict(port, path="/api/predict", headers=None):
    """(status, JSON answer, headers) of one upload."""
    body, content_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type, "Host": "localhost",
                                                        **(headers or {})})
        reply = conn.getresponse()
        data = reply.read()
        return reply.status, json.loads(data) if data.startswith(b"{") else data, dict(reply.getheaders())
    finally:
        conn.close()


def scrape(port):
    status, text = helpers.request("GET", port, "/metrics", b"", {"Host": "localhost"})
    assert status == 200
    return text.decode()


def test_metrics_count_every_request_across_both_workers(versions_stack):
    _, port, _ = versions_stack
    before = sample(scrape(port), "cifarlab_http_requests_total", method="POST", route="/api/predict", status="200")
    for _ in range(30):
        assert predict(port)[0] == 200
    text = scrape(port)
    assert sample(text, "cifarlab_http_requests_total", method="POST", route="/api/predict", status="200") == before + 30
    assert sample(text, "cifarlab_model_loads_total", model="cnn", outcome="loaded") >= 2  # each worker loaded it


def test_request_ids_pass_through_nginx_and_are_made_when_missing(versions_stack):
    _, port, _ = versions_stack
    assert predict(port, headers={"X-Request-ID": "trace-42"})[2]["X-Request-ID"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", predict(port)[2]["X-Request-ID"])


def test_two_models_answer_by_name(versions_stack):
    _, port, _ = versions_stack
    assert predict(port)[1]["model"]["served_name"] == "cnn"
    assert predict(port, "/api/predict?model=tiny")[1]["model"]["served_name"] == "tiny"
    assert predict(port, "/api/predict?model=none")[0] == 404


def test_a_new_version_rolls_out_under_load_without_a_failed_request(versions_stack):
    root, port, _ = versions_stack
    answers, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            status, body, _ = predict(port)
            answers.append((status, body["model"]["served_version"] if status == 200 else body))

    threads = [threading.Thread(target=client) for _ in range(4)]
    [t.start() for t in threads]
    time.sleep(5)
    add_version(root, "cnn", 2)
    time.sleep(15)
    stop.set()
    [t.join(30) for t in threads]
    assert len(answers) > 100 and all(a[0] == 200 for a in answers), [a for a in answers if a[0] != 200][:3]
    assert {version for _, version in answers[-20:]} == {2}  # both workers switched (latency lives in bench_serve)


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(versions_stack):
    """After the roll-out above (version 2 serving)."""
    root, port, _ = versions_stack
    add_version(root, "cnn", 3, broken=True)
    deadline = time.monotonic() + 30  # a worker recycled by max_requests during the load may still be starting
    while time.monotonic() < deadline and sample(scrape(port), "cifarlab_model_loads_total", model="cnn",
                                                 outcome="refused") < 2:
        time.sleep(POLL)
    status, body, _ = predict(port)
    assert status == 200 and body["model"]["served_version"] == 2
    _, answer = helpers.request("GET", port, "/v1/models/cnn", b"", {"Host": "localhost"})
    states = {v["version"]: v for v in json.loads(answer)["model_version_status"]}
    assert states["3"]["state"] == "END" and states["3"]["status"]["error_message"]
    assert states["2"]["state"] == "AVAILABLE"
    assert sample(scrape(port), "cifarlab_model_loads_total", model="cnn", outcome="refused") >= 2  # each worker


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def gunicorn_pid(launcher, seconds=30):
    """The gunicorn master the make serve launcher started (waited for: after a halt it starts one after a backoff)."""
    deadline = time.monotonic() + seconds
    while True:
        masters = [pid for pid in children(launcher.pid) if b"gunicorn" in open(f"/proc/{pid}/cmdline", "rb").read()]
        if masters or time.monotonic() > deadline:
            return masters[0]
        time.sleep(0.2)


def wait_until_serving(port, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predict(port)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def test_a_recycled_worker_boots_beside_odd_version_folders(versions_stack):
    root, port, server = versions_stack
    for name in ("\u00b2", "01", "\u0663"):  # isdigit() accepts these; int() refuses or misreads them
        (root / "cnn" / name).mkdir()
    gunicorn = gunicorn_pid(server)
    for worker in children(gunicorn):
        os.kill(worker, signal.SIGKILL)  # gunicorn boots new ones, as after max_requests
    time.sleep(2)
    assert wait_until_serving(port) and server.poll() is None
    assert all(predict(port)[0] == 200 for _ in range(10))


def test_recycled_workers_leave_no_metrics_files_and_their_counts_stay(versions_stack):
    _, port, server = versions_stack
    gunicorn = gunicorn_pid(server)
    environ = dict(item.split("=", 1) for item in open(f"/proc/{gunicorn}/environ").read().split("\0") if "=" in item)
    folder = environ["PROMETHEUS_MULTIPROC_DIR"]
    for _ in range(3):
        before = sample(scrape(port), "cifarlab_http_requests_total", method="POST", route="/api/predict",
                        status="200")
        for worker in children(gunicorn):
            os.kill(worker, signal.SIGKILL)
        time.sleep(1)
        assert wait_until_serving(port)
        after = sample(scrape(port), "cifarlab_http_requests_total", method="POST", route="/api/predict", status="200")
        assert after >= before + 1  # the dead workers' requests still counted, the new one's added
    kinds = [name.split("_", 1)[0] for name in os.listdir(folder)]
    assert kinds.count("counter") <= 3 and kinds.count("histogram") <= 3  # 2 live workers + the merged file


def test_the_launcher_starts_gunicorn_again_when_it_halts(versions_stack):
    _, port, server = versions_stack
    gunicorn = gunicorn_pid(server)
    os.kill(gunicorn, signal.SIGKILL)
    time.sleep(1)
    assert wait_until_serving(port) and server.poll() is None
