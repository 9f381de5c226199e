"""A kill -9 of the server while 8 clients flag answers loses no flag that was answered 2xx (SQLite and PostgreSQL)."""
import http.client
import json
import os
import signal
import sys
import threading
import time

import pytest

from tests import helpers
from cifarlab.feedback.store import Store
from tests.helpers import image_bytes

pytestmark = pytest.mark.slow
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def start_gunicorn(model, database_url, folder, log):
    """gunicorn (2 workers x 4 threads) serving the model, answers and flags kept in the database; (process, port)."""
    port = helpers.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "2", "WEB_THREADS": "4", "MODEL_PATH": str(model),
           "DATABASE_URL": database_url, "FEEDBACK_FOLDER": str(folder / "feedback"), "SECRET_KEY": "t",
           "UPLOAD_FOLDER": str(folder / "uploads"), "GRADCAM": "false", "FEEDBACK_SAMPLE_PER_HOUR": "0"}
    return helpers.start_server([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], port, env,
                                 log_path=str(log)), port


def flagger(port, answered, stop, seed):
    """Predict 4 images, flag each answer; record (id, label) of every flag answered 2xx, until stop or the server
    goes away."""
    body, ctype = helpers.multipart({}, [("file", f"{i}.png", image_bytes(seed=seed * 100 + i)) for i in range(4)])
    n = 0
    while not stop.is_set():
        try:
            status, reply = helpers.request("POST", port, "/api/predict", body, {"Content-Type": ctype}, timeout=10)
            if status != 200:
                continue
            for prediction in json.loads(reply)["predictions"]:
                label = CLASSES[n % len(CLASSES)]
                n += 1
                flag = json.dumps({"id": prediction["id"], "label": label}).encode()
                status, _ = helpers.request("POST", port, "/api/feedback", flag,
                                             {"Content-Type": "application/json"}, timeout=10)
                if status in (200, 201):
                    answered.append((prediction["id"], label))
        except (OSError, http.client.HTTPException):  # the server was killed mid-request (or mid-answer)
            return


def test_a_kill_9_under_8_flaggers_loses_no_answered_flag(exported, database_url, tmp_path):
    model = exported[0] / "tiny_int8.tflite"
    server, port = start_gunicorn(model, database_url, tmp_path, tmp_path / "first.log")
    answered, stop = [], threading.Event()
    threads = [threading.Thread(target=flagger, args=(port, answered, stop, seed)) for seed in range(8)]
    try:
        [t.start() for t in threads]
        deadline = time.monotonic() + 60
        while len(answered) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)  # master, workers and decoders at once, mid-request
        server.wait(10)
    finally:
        stop.set()
        [t.join(30) for t in threads]
        helpers.stop_server(server)
    assert len(answered) >= 200

    store = Store.open(database_url, tmp_path / "feedback", classes=CLASSES)
    lost = [(answer_id, label) for answer_id, label in answered if (store.get(answer_id) or {}).get("flag") != label]
    assert lost == []
    flagged = store.counts()["flags_per_class"]
    assert len(answered) <= sum(count for _, count in flagged) <= len(answered) + 8  # + those in flight at the kill

    server, port = start_gunicorn(model, database_url, tmp_path, tmp_path / "second.log")  # the store opens again
    try:
        answer_id, _ = answered[0]
        flag = json.dumps({"id": answer_id, "label": "none"}).encode()
        status, reply = helpers.request("POST", port, "/api/feedback", flag, {"Content-Type": "application/json"})
        assert status == 200 and json.loads(reply)["replaced"] is True
    finally:
        helpers.stop_server(server)
