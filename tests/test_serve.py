"""The production stack (nginx in front of gunicorn, `python -m cifarlab.web.serve`) on loopback."""
import os
import subprocess
import sys
import time

import pytest

from cifarlab import REPO, loadtest
from cifarlab.web import serve
from tests.conftest import image_bytes

NEED_NGINX = os.environ.get("REQUIRE_NGINX") == "1"  # CI installs Debian's nginx and sets this


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tiny_model_path, tmp_path_factory):
    """`python -m cifarlab.web.serve` on a free port with one worker of two threads (easy to starve); yields the port."""
    if serve.find_nginx() is None:
        if NEED_NGINX:
            pytest.fail("nginx is required (REQUIRE_NGINX=1) but not installed")
        pytest.skip("nginx is not installed")
    port = loadtest.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "MODEL_PATH": str(tiny_model_path), "WEB_WORKERS": "1", "WEB_THREADS": "2",
           "UPLOAD_FOLDER": str(tmp_path_factory.mktemp("uploads")), "SECRET_KEY": "t", "GRADCAM": "false"}
    log = tmp_path_factory.mktemp("log") / "serve.log"
    server = loadtest.start_server([sys.executable, "-m", "cifarlab.web.serve"], port, env, log_path=str(log),
                                   headers={"Host": "localhost"})
    yield port
    loadtest.stop_server(server)


def test_stack_serves_the_api_through_nginx(stack):
    body, content_type = loadtest.multipart({}, [("file", "a.png", image_bytes())])
    status, answer = loadtest.request("POST", stack, "/api/predict", body,
                                      {"Content-Type": content_type, "Host": "localhost"})
    assert status == 200 and b'"predictions"' in answer


def test_stack_refuses_an_oversized_body_in_nginx(stack):
    status, answer = loadtest.request("POST", stack, "/api/predict", b"x" * (11 * 2**20),
                                      {"Content-Type": "application/octet-stream", "Host": "localhost"})
    assert status == 413 and b"limit is 10 MB" in answer


def test_slow_clients_do_not_take_the_stack_offline(stack):
    threads, made = loadtest.slow_clients(stack, connections=50, seconds=20, drip_every=1.0)
    time.sleep(2)  # let every attacker connect and start dripping
    probes = loadtest.probe(stack, "/healthz", seconds=16, every=1.0)
    for t in threads:
        t.join(30)
    assert made[0] >= 50
    assert all(status == 200 and latency < 1.0 for status, latency in probes), probes


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
