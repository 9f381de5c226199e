"""cifarlab.web.hooks: what every request gets: security headers, one log line, refused unnamed parts."""
import os
import subprocess
import sys

import pytest


def test_security_headers_on_every_page(client):
    for response in (client.get("/"), client.get("/missing")):
        csp = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"]


@pytest.mark.parametrize("level, logged", [("info", True), ("warning", False)])
def test_each_request_is_one_log_line_on_stderr_at_info(tmp_path, level, logged):
    script = "from app import create_app; create_app().test_client().get('/healthz')"
    env = {**os.environ, "LOG_LEVEL": level, "UPLOAD_FOLDER": str(tmp_path), "SECRET_KEY": "k" * 32}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "cifarlab.app: GET /healthz 200" in line]
    assert len(lines) == (1 if logged else 0)


@pytest.mark.parametrize("path", ["/", "/api/predict"])
def test_a_part_without_a_name_is_a_400(make_app, path):
    boundary = "b0undary"
    body = f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{boundary}--\r\n".encode()  # no name
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    reply = client.post(path, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert reply.status_code == 400 and b"without a name" in reply.data
