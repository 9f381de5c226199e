"""The production stack (nginx in front of gunicorn, `python -m cifarlab.web.serve`) on loopback."""
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from tests import helpers
from tests.helpers import scan_bomb
from cifarlab import atomic, modelfile, REPO
from cifarlab.children import descendants
from cifarlab.web import serve, settings
from tests.helpers import image_bytes
from tests.processes import running

NEED_NGINX = os.environ.get("REQUIRE_NGINX") == "1"  # CI installs Debian's nginx and sets this


pytestmark = pytest.mark.slow


def need_nginx():
    """Skip without nginx, unless CI requires it."""
    if serve.find_nginx() is None:
        if NEED_NGINX:
            pytest.fail("nginx is required (REQUIRE_NGINX=1) but not installed")
        pytest.skip("nginx is not installed")


def start_stack(tmp_path_factory, **env):
    """`python -m cifarlab.web.serve` on a free port with one worker of two threads (easy to starve); (process, port)."""
    need_nginx()
    port = helpers.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "1", "WEB_THREADS": "2",
           "UPLOAD_FOLDER": str(tmp_path_factory.mktemp("uploads")), "SECRET_KEY": "t", "GRADCAM": "false",
           "XDG_RUNTIME_DIR": str(tmp_path_factory.mktemp("runtime")), **env}
    log = tmp_path_factory.mktemp("log") / "serve.log"
    server = helpers.start_server([sys.executable, "-m", "cifarlab.web.serve"], port, env, log_path=str(log),
                                   headers={"Host": "localhost"})
    server.log_path = log
    return server, port


@pytest.fixture(scope="module")
def stack(tiny_model_path, tmp_path_factory):
    """The stack serving the tiny model; yields the port."""
    server, port = start_stack(tmp_path_factory, MODEL_PATH=str(tiny_model_path))
    yield port
    helpers.stop_server(server)


def answer(port, method, path, body=b"", content_type="application/octet-stream"):
    """(status, Content-Type, body) of one request with a Host the app trusts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": "localhost", "Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def assert_json_error(reply, status, words):
    assert reply[0] == status and reply[1] == "application/json", reply
    assert words in json.loads(reply[2])["error"]


def assert_error_page(reply, status, words):
    assert reply[0] == status and reply[1].startswith("text/html"), reply
    assert f"<h1>{status} ".encode() in reply[2] and words.encode() in reply[2] and b'href="/model"' in reply[2]


def test_the_stack_opens_no_shared_gunicorn_control_socket(stack, tmp_path_factory):
    runtimes = list(tmp_path_factory.getbasetemp().glob("runtime*"))  # each stack's XDG_RUNTIME_DIR
    assert runtimes and not [r for r in runtimes if (r / "gunicorn.ctl").exists()]


def test_stack_serves_the_api_through_nginx(stack):
    body, content_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    status, answer = helpers.request("POST", stack, "/api/predict", body,
                                      {"Content-Type": content_type, "Host": "localhost"})
    assert status == 200 and b'"predictions"' in answer


@pytest.mark.parametrize("path", ["/api/predict", "/v1/models/cifar10:predict"])
def test_an_oversized_api_request_is_a_json_413_from_nginx(stack, path):
    assert_json_error(answer(stack, "POST", path, b"x" * (11 * 2**20)), 413, "the limit is 10 MB per request")


def test_an_oversized_form_post_is_the_apps_error_page_from_nginx(stack):
    assert_error_page(answer(stack, "POST", "/", b"x" * (11 * 2**20), "multipart/form-data; boundary=x"), 413,
                      "the limit is 10 MB per request")


@pytest.fixture(scope="module")
def slow_backend_stack(tmp_path_factory):
    """The stack as a remote front of a backend that never answers, nginx waiting 1 s for the app; yields the port."""
    backend = helpers.FakeBackend.start("hang")
    server, port = start_stack(tmp_path_factory, INFERENCE_URL=f"http://127.0.0.1:{backend.server_port}",
                               PROXY_TIMEOUT="1", INFERENCE_TIMEOUT="4", INFERENCE_RETRIES="0")
    yield port
    helpers.stop_server(server)
    backend.shutdown()


def test_a_backend_timeout_is_a_json_504_on_the_api_and_the_error_page_elsewhere(slow_backend_stack):
    body, content_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    assert_json_error(answer(slow_backend_stack, "POST", "/api/predict", body, content_type), 504,
                      "took too long to answer")
    assert_error_page(answer(slow_backend_stack, "GET", "/examples/cat"), 504, "took too long to answer")


def test_an_app_that_is_down_is_a_json_502_on_the_api_and_the_error_page_elsewhere(tiny_model_path):
    need_nginx()
    port, dead = helpers.free_port(), helpers.free_port()
    config = {**settings.defaults(), "MAX_CONTENT_LENGTH": 2**20}
    run_dir = serve.prepare_run_dir(f"127.0.0.1:{port}", dead, config, modelfile.preflight(tiny_model_path))
    nginx = subprocess.Popen([serve.find_nginx(), "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", "stderr"],
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                reply = answer(port, "GET", "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        assert_json_error(reply, 502, "not answering right now")
        assert_error_page(answer(port, "GET", "/model"), 502, "not answering right now")
    finally:
        serve.stop(nginx)
        shutil.rmtree(run_dir)


def test_slow_clients_do_not_take_the_stack_offline(stack):
    threads, made = helpers.slow_clients(stack, connections=50, seconds=20, drip_every=1.0)
    time.sleep(2)  # let every attacker connect and start dripping
    probes = helpers.probe(stack, "/healthz", seconds=16, every=1.0)
    for t in threads:
        t.join(30)
    assert made[0] >= 50
    assert all(status == 200 for status, _ in probes), probes  # each within the probe's 5 s timeout


@pytest.mark.parametrize("env,message", [({"MAX_CONTENT_LENGTH": "10XB"}, "setting MAX_CONTENT_LENGTH"),
                                         ({"MODEL_PATH": "/nonexistent.h5"}, "model file not found")])
def test_bad_setting_or_model_stops_the_stack_with_one_line(env, message):
    result = subprocess.run([sys.executable, "-m", "cifarlab.web.serve"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        next(line for line in result.stderr.splitlines() if message in line)]
    assert "Traceback" not in result.stderr


def test_gunicorn_alone_also_refuses_a_bad_model_with_exit_2():
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    result = subprocess.run(command, env={**os.environ, "MODEL_PATH": "/nonexistent.h5", "BIND": "127.0.0.1:0"},
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2 and "error: /nonexistent.h5: model file not found." in result.stderr
    assert "Traceback" not in result.stderr


def test_scan_bombs_at_once_are_refused_and_healthz_keeps_answering(stack):
    body, content_type = helpers.multipart({}, [("file", f"bomb{i}.jpg", scan_bomb()) for i in range(8)])
    assert len(body) > 2_000_000
    replies, probes = helpers.probe_during(stack, lambda: answer(stack, "POST", "/api/predict", body, content_type),
                                            8, seconds=4, every=0.25)
    assert len(replies) == 8, replies
    for reply, _ in replies:
        assert_json_error(reply, 422, "scans")
    assert all(status == 200 for status, _ in probes), probes  # each within the probe's 5 s timeout


@pytest.fixture(scope="module")
def deadline_stack(tiny_model_path, tmp_path_factory):
    """The stack with a 0.1 s decoding deadline and the pixel limits lifted, so only the deadline bounds the work."""
    server, port = start_stack(tmp_path_factory, MODEL_PATH=str(tiny_model_path), REQUEST_DEADLINE="0.1",
                               MAX_IMAGE_PIXELS=str(81_000_000), MAX_REQUEST_PIXELS=str(10**9))
    yield port, server.pid
    helpers.stop_server(server)


def test_a_decoder_past_the_deadline_is_killed_mid_image_and_the_next_request_is_served(deadline_stack):
    port, pid = deadline_stack
    small = helpers.multipart({}, [("file", "a.png", image_bytes())])
    assert answer(port, "POST", "/api/predict", *small)[0] == 200  # a decoder is up and idle
    before = set(running(descendants(pid)))
    buffer = io.BytesIO()
    Image.new("RGB", (9000, 9000), (90, 120, 30)).save(buffer, format="PNG")  # 81 MP decoded, 270 kB sent
    reply = answer(port, "POST", "/api/predict", *helpers.multipart({}, [("file", "big.png", buffer.getvalue())]))
    assert_json_error(reply, 503, "0.1 s limit")
    assert before - set(running(descendants(pid)))  # the decoder was killed mid-image, not waited for
    assert answer(port, "POST", "/api/predict", *small)[0] == 200


def maps_tensorflow(pid):
    """True when the process has TensorFlow's runtime library loaded."""
    with open(f"/proc/{pid}/maps") as maps:
        return "libtensorflow" in maps.read()


def test_explanations_come_from_one_explain_worker_and_the_web_workers_stay_tensorflow_free(exported,
                                                                                           tmp_path_factory):
    model = exported[0] / "tiny_int8.tflite"  # as deployed: an int8 export, explained from the .h5 it came from
    server, port = start_stack(tmp_path_factory, MODEL_PATH=str(model), GRADCAM="true", WEB_WORKERS="2")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/", headers={"Host": "localhost"})
        form = conn.getresponse()
        cookie, html = form.getheader("Set-Cookie").split(";", 1)[0], form.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        body, content_type = helpers.multipart({"csrf_token": token}, [("file", "a.png", image_bytes())])
        conn.request("POST", "/", body=body, headers={"Host": "localhost", "Content-Type": content_type,
                                                      "Cookie": cookie})
        page = conn.getresponse().read().decode()
        link = re.search(r'class="explain-link" href="([^"]+)"', page).group(1).replace("&amp;", "&")
        replies = [answer(port, "GET", link) for _ in range(4)]  # both web workers, most likely
        assert all(status == 200 and b'src="data:image/png;base64,' in body for status, _, body in replies)
        processes = {pid: open(f"/proc/{pid}/cmdline").read() for pid in helpers.process_tree_rss_mb(server.pid)}
        explainers = [pid for pid, command in processes.items() if "explain_worker" in command]
        web = [pid for pid, command in processes.items() if "gunicorn" in command or "decoding" in command]
        assert len(explainers) == 1 and maps_tensorflow(explainers[0])
        assert len(web) >= 3 and not any(maps_tensorflow(pid) for pid in web)  # master, 2 workers, their decoders
    finally:
        helpers.stop_server(server)


@pytest.fixture(scope="module")
def small_limit_stack(tiny_model_path, tmp_path_factory):
    """The stack with a 64 kB request limit (nginx lets 64 kB more through for multipart framing); yields the port."""
    server, port = start_stack(tmp_path_factory, MODEL_PATH=str(tiny_model_path), MAX_CONTENT_LENGTH="64k")
    yield port
    helpers.stop_server(server)


def test_an_early_413_from_the_app_never_poisons_the_next_request(small_limit_stack):
    body, content_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    statuses = []
    for _ in range(100):
        over = answer(small_limit_stack, "POST", "/api/predict", b"x" * (100 * 1024), "application/octet-stream")
        assert over[0] == 413 and over[1] == "application/json", over  # the app's own 413, before reading the body
        statuses.append(answer(small_limit_stack, "POST", "/api/predict", body, content_type)[0])
    assert statuses == [200] * 100


def test_sigterm_lets_every_request_in_flight_finish(tmp_path_factory):
    backend = helpers.FakeBackend.start("slow")  # every answer takes 2 s
    server, port = start_stack(tmp_path_factory, INFERENCE_URL=f"http://127.0.0.1:{backend.server_port}",
                               WEB_THREADS="8", INFERENCE_MAX_INFLIGHT="8", INFERENCE_RETRIES="0")
    body, content_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    results = []
    try:
        threads = [threading.Thread(target=lambda: results.append(
            answer(port, "POST", "/api/predict", body, content_type)[0])) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # all six are at the backend now
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert server.wait(60) == 0
    finally:
        helpers.stop_server(server)
        backend.shutdown()
    assert results == [200] * 6


LAUNCHERS = {"dev": ["app.py", "--port", "0"], "gunicorn": ["-m", "gunicorn", "-c", "gunicorn.conf.py"],
             "make serve": ["-m", "cifarlab.web.serve"]}


def broken_models(root, tiny_model_path, tflite):
    """{case: environment} of model files and settings no launcher may start with."""
    root.mkdir()
    meta = modelfile.read_meta(tflite)
    (root / "corrupt.tflite").write_bytes(tflite.read_bytes()[:8] + b"\0" * 4096)  # the magic intact, the rest not
    atomic.write_json(root / "corrupt.json", meta)
    shutil.copy(tflite, root / "mismatch.tflite")
    atomic.write_json(root / "mismatch.json", {**meta, "class_names": meta["class_names"][:5]})
    shutil.copy(tflite, root / "no-views.tflite")  # probabilities read as per-view logits, or the other way round
    atomic.write_json(root / "no-views.json", {**meta, "tta_views": [[False, 0, 0, 1.0], [True, 0, 0, 1.0]]})
    shutil.copy(tflite, root / "cold.tflite")
    atomic.write_json(root / "cold.json", {**meta, "calibration": {"temperature": -1.0}})
    (root / "truncated.h5").write_bytes(tiny_model_path.read_bytes()[:20000])
    shutil.copy(modelfile.sidecar_path(tiny_model_path), root / "truncated.json")
    return {
        "corrupt tflite": ({"MODEL_PATH": str(root / "corrupt.tflite")}, "cannot load TFLite model"),
        "sidecar mismatch": ({"MODEL_PATH": str(root / "mismatch.tflite")}, "but the sidecar lists"),
        "views mismatch": ({"MODEL_PATH": str(root / "no-views.tflite")}, "but the model outputs probabilities"),
        "bad temperature": ({"MODEL_PATH": str(root / "cold.tflite")}, "temperature -1.0"),
        "truncated h5": ({"MODEL_PATH": str(root / "truncated.h5")}, "cannot load model"),
        "upload folder": ({"UPLOAD_FOLDER": "/proc/no-such-folder"}, "setting UPLOAD_FOLDER"),
        "401 digits": ({"MAX_CONTENT_LENGTH": "9" * 401}, "setting MAX_CONTENT_LENGTH"),
        "workers abc": ({"WEB_WORKERS": "abc"}, "setting WEB_WORKERS"),
        "workers 0": ({"WEB_WORKERS": "0"}, "setting WEB_WORKERS"),
        "bind": ({"BIND": "nowhere"}, "setting BIND"),
        "backend port": ({"INFERENCE_URL": "http://127.0.0.1:99999"}, "setting INFERENCE_URL"),
    }


@pytest.fixture(scope="module")
def bad_starts(tmp_path_factory, tiny_model_path, exported):
    return broken_models(tmp_path_factory.mktemp("bad") / "models", tiny_model_path, exported[0] / "tiny_int8.tflite")


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("case", ["corrupt tflite", "sidecar mismatch", "views mismatch", "bad temperature",
                                  "truncated h5", "upload folder", "401 digits",
                                  "workers abc", "workers 0", "bind", "backend port"])
def test_every_launcher_refuses_a_bad_start_with_one_line_and_exit_2(bad_starts, launcher, case):
    env, message = bad_starts[case]
    result = subprocess.run([sys.executable, *LAUNCHERS[launcher]], env={**os.environ, "SECRET_KEY": "k", **env},
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-1500:]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def models_stack(tmp_path_factory):
    """The stack on a MODEL_DIR (version 1 the shipped int8 model, then version 2 a file that is no model), behind
    a trusted proxy on loopback; yields (port, MODEL_DIR, the server's log)."""
    from tests.test_registry import add_version

    root = tmp_path_factory.mktemp("served") / "models"
    add_version(root, "cnn", 1)
    server, port = start_stack(tmp_path_factory, MODEL_DIR=str(root), SERVING_MODEL_NAME="cnn", LOG_LEVEL="info",
                               TRUSTED_PROXIES="127.0.0.1", MODEL_POLL_SECONDS="0.5")
    add_version(root, "cnn", 2, broken=True)
    deadline = time.monotonic() + 30
    while b'"version":"2"' not in answer(port, "GET", "/v1/models/cnn")[2] and time.monotonic() < deadline:
        time.sleep(0.25)
    yield port, root, server.log_path
    helpers.stop_server(server)


def test_a_line_break_in_a_url_is_logged_escaped_not_as_a_forged_line(models_stack):
    port, _, log_path = models_stack
    assert answer(port, "GET", "/nothing%0a[2026-12-05]%20forged")[0] == 404
    log = log_path.read_text()
    assert "/nothing%0A%5B2026-12-05%5D%20forged 404" in log
    assert not [line for line in log.splitlines() if line.startswith("[2026-12-05] forged")]


def test_an_encoded_slash_in_a_model_name_is_a_json_404_not_a_redirect(models_stack):
    assert_json_error(answer(models_stack[0], "GET", "/v1/models/%2F/metadata"), 404, "not found")


def test_model_status_names_a_refused_version_without_server_paths(models_stack):
    port, root, _ = models_stack
    status, _, body = answer(port, "GET", "/v1/models/cnn")
    versions = {v["version"]: v for v in json.loads(body)["model_version_status"]}
    assert status == 200 and versions["1"]["state"] == "AVAILABLE" and versions["2"]["state"] == "END"
    assert versions["2"]["status"]["error_message"].startswith("MODEL_DIR/cnn/2/")
    assert str(root) not in body.decode() and str(root.parent) not in body.decode()


ROUTES_BY_METHODS = ["/", "/feedback", "/review/some-id", "/api/feedback", "/api/predict", "/v1/models/cnn",
                     "/v1/models/cnn/metadata", "/v1/models/cnn:predict", "/v1/models/cnn/versions/1:predict",
                     "/v1/models/cnn/labels/stable:predict", "/model", "/healthz", "/api?x=1"]


@pytest.mark.parametrize("path", ROUTES_BY_METHODS)
def test_nginx_refuses_trace_with_the_allow_header_the_app_gives(models_stack, path):
    port = models_stack[0]
    trace = loadtest_response(port, "TRACE", path)
    app_allow = allowed_methods(port, path)
    assert trace.status == 405 and set(trace.getheader("Allow").split(", ")) == app_allow, path


def test_a_predict_path_answers_get_with_405_naming_post(models_stack):
    port = models_stack[0]
    reply = loadtest_response(port, "GET", "/v1/models/cnn:predict")
    assert reply.status == 405 and set(reply.getheader("Allow").split(", ")) == {"POST", "OPTIONS"}
    assert allowed_methods(port, "/v1/models/cnn:predict") == {"POST", "OPTIONS"}


def test_metrics_take_the_client_from_forwarded_for_of_a_trusted_proxy_only(models_stack, stack):
    port = models_stack[0]
    outsider = {"X-Forwarded-For": "203.0.113.9"}
    assert loadtest_response(port, "GET", "/metrics").status == 200  # a scraper on this host
    assert loadtest_response(port, "GET", "/metrics", outsider).status == 403  # a client behind the TLS proxy
    assert loadtest_response(stack, "GET", "/metrics", outsider).status == 200  # no TRUSTED_PROXIES: the header is
    # anyone's to send, so it is not believed (docs/deployment.md says to set TRUSTED_PROXIES behind such a proxy)


def test_a_text_field_over_the_form_limit_never_poisons_the_next_request(models_stack):
    port = models_stack[0]
    field, field_type = helpers.multipart({"note": "x" * (2 * 2**20)}, [("file", "a.png", image_bytes())])
    good, good_type = helpers.multipart({}, [("file", "a.png", image_bytes())])
    pairs = [(answer(port, "POST", "/", field, field_type), answer(port, "POST", "/api/predict", good, good_type)[0])
             for _ in range(10)]
    assert all(refused[0] == 413 and b"500 kB per text field" in refused[2] for refused, _ in pairs)
    assert [after for _, after in pairs] == [200] * 10


def loadtest_response(port, method, path, headers=None):
    """The response (read) of one request with a Host the app trusts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Host": "localhost", **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def allowed_methods(port, path):
    """The app's Allow for a path (its OPTIONS answer, or the 405 of a method no route takes), as a set."""
    reply = loadtest_response(port, "OPTIONS", path)
    if reply.getheader("Allow") is None:
        reply = loadtest_response(port, "PATCH", path)
    return set(reply.getheader("Allow").split(", "))
