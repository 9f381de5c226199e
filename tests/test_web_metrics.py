"""Prometheus /metrics (who may read it, what it counts), request ids and the JSON request log."""
import json
import logging
import re

import pytest

from cifarlab.web import metrics, settings
from tests.helpers import image_bytes


def sample(text, name, **labels):
    """The value of one sample in Prometheus's text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts them
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def post(client, *files, path="/api/predict"):
    return client.post(path, data={"file": [(f, name) for name, f in files]}, content_type="multipart/form-data")


def test_metrics_count_requests_images_verdicts_and_refusals(client):
    import io

    for _ in range(3):
        assert post(client, ("a.png", io.BytesIO(image_bytes()))).status_code == 200
    assert post(client, ("b.png", io.BytesIO(b"not an image")), ("c.png", io.BytesIO(image_bytes()))).status_code == 200
    assert client.post("/api/predict", data={}).status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "cifarlab_http_requests_total", method="POST", route="/api/predict", status="200") == 4
    assert sample(text, "cifarlab_http_requests_total", method="POST", route="/api/predict", status="400") == 1
    assert sample(text, "cifarlab_images_classified_total", model="cifar10", version="1") == 4
    verdicts = sum(sample(text, "cifarlab_verdicts_total", model="cifar10", version="1", verdict=v)
                   for v in ("known", "unsure", "unknown"))
    assert verdicts == 4
    assert sample(text, "cifarlab_refused_uploads_total", reason="unsupported") == 1
    assert sample(text, "cifarlab_refused_uploads_total", reason="request") == 1
    assert sample(text, "cifarlab_model_loads_total", model="cifar10", outcome="loaded") == 1
    assert sample(text, "cifarlab_http_request_duration_seconds_count", route="/api/predict") == 5
    assert sample(text, "cifarlab_batch_size_count", model="cifar10") == 4
    assert "cifarlab_http_requests_in_flight" in text


def test_unmatched_paths_share_one_route_label(client):
    client.get("/no/such/page")
    client.get("/another/missing")
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "cifarlab_http_requests_total", method="GET", route="unmatched", status="404") == 2
    assert "/no/such/page" not in text


def test_unknown_methods_share_one_label(client):
    for n in range(5):
        client.open("/", method=f"BREW{n}")
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "cifarlab_http_requests_total", method="other", route="unmatched", status="405") == 5
    assert "BREW" not in text


@pytest.mark.parametrize("remote,real_ip,allow,status", [
    ("127.0.0.1", None, None, 200),
    ("::1", None, None, 200),
    ("10.1.2.3", None, None, 403),
    ("127.0.0.1", "203.0.113.9", None, 403),     # behind nginx: the client's own address decides
    ("127.0.0.1", "127.0.0.1", None, 200),
    ("10.1.2.3", "127.0.0.1", None, 403),        # a forged X-Real-IP from elsewhere is not believed
    ("10.1.2.3", None, "10.0.0.0/8", 200),
    ("203.0.113.9", None, "*", 200),
])
def test_metrics_answer_only_the_allowed_clients(make_app, remote, real_ip, allow, status):
    overrides = {} if allow is None else {"METRICS_ALLOW": settings.address_list(allow)}
    client = make_app(**overrides).test_client()
    headers = {"X-Real-IP": real_ip} if real_ip else {}
    reply = client.get("/metrics", environ_base={"REMOTE_ADDR": remote}, headers=headers)
    assert reply.status_code == status
    if status == 403:
        assert "METRICS_ALLOW" in reply.get_data(as_text=True)
    else:
        assert reply.mimetype == "text/plain"


@pytest.mark.parametrize("value", ["", "10.0.0.0/33", "localhost", ",,"])
def test_a_bad_metrics_allow_setting_is_one_line(value):
    with pytest.raises(settings.ConfigError, match="METRICS_ALLOW"):
        settings.from_environ({"METRICS_ALLOW": value or " "})


def test_client_address_rules():
    assert str(metrics.client_address("127.0.0.1", "198.51.100.7")) == "198.51.100.7"
    assert str(metrics.client_address("198.51.100.7", "127.0.0.1")) == "198.51.100.7"
    assert metrics.client_address("127.0.0.1", "not an address") is None
    assert not metrics.allowed(settings.address_list("127.0.0.0/8"), None)


def test_request_id_is_passed_through_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/healthz").headers["X-Request-ID"] != made


def test_json_log_has_one_object_per_request(make_app, caplog):
    import io

    client = make_app(LOG_FORMAT="json").test_client()
    with caplog.at_level(logging.INFO, logger="cifarlab.app"):
        post(client, ("a.png", io.BytesIO(image_bytes())), ("b.png", io.BytesIO(image_bytes(seed=2))))
        client.get("/nope", headers={"X-Request-ID": "r-1"})
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cifarlab.app"]
    assert len(records) == 2
    first, second = records
    assert first["route"] == "/api/predict" and first["status"] == 200 and first["images"] == 2
    assert sum(first["verdicts"].values()) == 2 and first["model"] == "cifar10" and first["model_version"] == "1"
    assert first["ms"] > 0 and first["time"].endswith("+00:00") and len(first["request_id"]) == 32
    assert second == {**second, "route": "unmatched", "status": 404, "images": 0, "request_id": "r-1"}


def test_text_log_stays_one_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="cifarlab.app"):
        client.get("/healthz")
    assert any(re.fullmatch(r"GET /healthz 200 [0-9.]+ms", r.getMessage()) for r in caplog.records)


def test_a_dead_workers_counts_fold_into_one_file_and_stay_counted(tmp_path):
    import os
    import subprocess
    import sys

    worker = ("import sys; from cifarlab.web.metrics import Metrics; m = Metrics(sys.argv[1]); "
              "[m.observe_request('GET', '/x', 200, 0.01) for _ in range(int(sys.argv[2]))]")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = [subprocess.Popen([sys.executable, "-c", worker, str(tmp_path), str(n)], env=env) for n in (3, 4, 5)]
    for p in pids:
        assert p.wait() == 0
    scrape = metrics.Metrics(str(tmp_path))
    before = sample(scrape.exposition().decode(), "cifarlab_http_requests_total", method="GET", route="/x", status="200")
    for p in pids:
        metrics.fold_dead_worker(p.pid, str(tmp_path))
    after = scrape.exposition().decode()
    assert before == 12 and sample(after, "cifarlab_http_requests_total", method="GET", route="/x", status="200") == 12
    assert sample(after, "cifarlab_http_request_duration_seconds_count", route="/x") == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_merged.db", "histogram_merged.db"]
