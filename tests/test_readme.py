"""The README's and docs' commands: each names things that exist, none writes over a tracked file, and the quick ones
run as written in a clone without changing it."""
import hashlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import train
from cifarlab import REPO, checkpoint, loadtest
from cifarlab.ml.presets import PRESETS
from cifarlab.web import settings

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", re.S | re.M)
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))
SCREENSHOTS = REPO / "docs" / "screenshots"
SCREENSHOTS_MANIFEST = "model.json"  # beside the screenshots (tests/test_browser.py writes it): which model they show
EXTERNAL = {"curl", "docker", "export", "apt-get"}  # other programs the docs use as they are


def documented_commands():
    """(doc file name, command line) of every command in the docs' shell code blocks, continuations joined."""
    found = []
    for path in DOCS:
        for block in SHELL_BLOCK.findall(path.read_text()):
            pending = ""
            for line in block.replace("\\\n", " ").splitlines():
                if not pending and (not line.strip() or line.lstrip().startswith("#")):
                    continue
                pending = f"{pending}\n{line}" if pending else line.strip()
                try:
                    shlex.split(pending, comments=True)
                except ValueError:  # a quote still open: the command goes on on the next line
                    continue
                found.append((path.name, pending))
                pending = ""
    return found


COMMANDS = documented_commands()


def words(command):
    """The command's words without leading VAR=value assignments and the trailing comment."""
    tokens = shlex.split(command, comments=True)
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
        tokens.pop(0)
    return tokens


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 15 and {name for name, _ in COMMANDS} >= {"README.md", "deployment.md", "training.md"}


@pytest.mark.parametrize("doc,command", COMMANDS)
def test_every_documented_command_names_things_that_exist(doc, command):
    program, *args = words(command)
    if program == "make":
        assert set(args) <= MAKE_TARGETS, f"{doc}: no such make target in {command!r}"
    elif program == ".venv/bin/python":
        if args[0] == "-m":
            assert importlib.util.find_spec(args[1]), f"{doc}: no module {args[1]}"
        else:
            assert (REPO / args[0]).is_file(), f"{doc}: no script {args[0]}"
        if args[0] == "train.py" and args[1:2] not in (["evaluate"], ["export"]):
            train.parse_args(args[1:])  # exits 2 on an option train.py does not take
    elif program.startswith(".venv/bin/"):
        assert re.search(rf"^{program.split('/')[-1]}==", (REPO / "requirements.txt").read_text(), re.M), \
            f"{doc}: {program} is not installed by requirements.txt"
    else:
        assert program in EXTERNAL, f"{doc}: {command!r} runs {program}: bare python or an unknown program"
    for attached in re.findall(r"@([\w./-]+)", command):
        assert (REPO / attached).is_file(), f"{doc}: {command!r} sends {attached}, which is not in the repo"
    if "--arch" in args:
        assert args[args.index("--arch") + 1] in PRESETS


@pytest.mark.parametrize("doc,command", [(doc, c) for doc, c in COMMANDS if "train.py" in c])
def test_no_documented_command_writes_into_the_shipped_model_folder(doc, command):
    args = words(command)
    out = args[args.index("--out") + 1] if "--out" in args else None
    assert out is None or not out.startswith("model"), f"{doc}: {command!r} writes into model/"
    if "evaluate" in args:  # evaluate rewrites the sidecar, card and plots beside the model it reads
        assert not args[args.index("--model") + 1].startswith("model/"), f"{doc}: {command!r} rewrites model/"


def tracked_changes():
    """git's list of changed and untracked (not ignored) files in the working tree."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.slow
def test_the_quick_documented_commands_run_as_written_and_change_no_tracked_file():
    before = tracked_changes()
    port = loadtest.free_port()
    server = loadtest.start_server([sys.executable, "app.py", "--port", str(port)], port, {"SECRET_KEY": "docs"})
    try:
        quick = [c for _, c in COMMANDS if words(c)[0] == "curl"]
        assert len(quick) >= 4
        for command in quick:
            result = subprocess.run(["bash", "-c", command.replace("127.0.0.1:5000", f"127.0.0.1:{port}")],
                                    cwd=REPO, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            answer = json.loads(result.stdout)  # JSON, not an error page
            assert "error" not in answer, (command, result.stdout)
    finally:
        loadtest.stop_server(server)
    settings = subprocess.run([sys.executable, "-m", "cifarlab.web.settings"], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
    assert settings.returncode == 0 and settings.stdout.strip() in (REPO / "README.md").read_text()
    assert tracked_changes() == before


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def screenshots_manifest():
    """What the screenshots show: the served model file and its sidecar (by content hash), and how they were taken."""
    model = Path(settings.defaults()["MODEL_PATH"])
    return {"model": str(model.relative_to(REPO)), "model_sha256": sha256(model),
            "sidecar_sha256": sha256(checkpoint.sidecar_path(model)),
            "command": "SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest tests/test_browser.py"}


def test_the_committed_screenshots_show_the_model_the_app_serves():
    taken = json.loads((SCREENSHOTS / SCREENSHOTS_MANIFEST).read_text())
    assert taken == screenshots_manifest(), f"the screenshots are older than the served model: run {taken['command']}"
    assert {p.name for p in SCREENSHOTS.glob("*.png")} >= {"index.png", "result.png", "batch.png", "phone.png"}
