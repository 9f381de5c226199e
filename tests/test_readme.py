"""The README's and docs' commands: each names things that exist, none writes over a tracked file, and the quick ones
run as written in a clone without changing it."""
import hashlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train
from tests import helpers
from cifarlab import modelfile, REPO
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
    elif program in (".venv/bin/python", ".venv-beam/bin/python"):
        if args[0] == "-m":
            assert importlib.util.find_spec(args[1]), f"{doc}: no module {args[1]}"
        else:
            assert (REPO / args[0]).is_file(), f"{doc}: no script {args[0]}"
        if args[0] == "train.py":
            train.parse(args[1:])  # exits 2 on an option train.py or its command does not take
    elif program.startswith(".venv/bin/"):
        pinned = (REPO / "requirements.txt").read_text() + (REPO / "requirements-test.txt").read_text()
        assert re.search(rf"^{program.split('/')[-1]}==", pinned, re.M), \
            f"{doc}: {program} is not installed by requirements.txt or requirements-test.txt"
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


def fresh_copy(folder):
    """The repository's tracked files (as in the working tree) copied into folder, with the venv linked in."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split("\0")):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    (folder / ".venv").symlink_to(REPO / ".venv")
    return folder


def contents(folder):
    """{relative path: sha256} of the files under folder, the venv link aside."""
    return {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*")
            if p.is_file() and ".venv" not in p.relative_to(folder).parts}


def quick(command):
    """True for the documented commands that finish in seconds: the API calls, predict on the examples."""
    return words(command)[0] == "curl" or "train.py predict static/" in command


@pytest.mark.slow
def test_the_quick_documented_commands_run_as_written_in_a_fresh_copy_and_change_no_tracked_file(tmp_path):
    clone = fresh_copy(tmp_path / "clone")
    before = contents(clone)
    port = helpers.free_port()
    server = helpers.start_server([sys.executable, "app.py", "--port", str(port)], port, {"SECRET_KEY": "docs"})
    try:
        commands = [c for _, c in COMMANDS if quick(c)]
        assert len(commands) >= 5
        for command in commands:
            result = subprocess.run(["bash", "-c", command.replace("127.0.0.1:5000", f"127.0.0.1:{port}")],
                                    cwd=clone, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, (command, result.stderr[-2000:])
            if words(command)[0] == "curl" and words(command)[-1].endswith("/metrics"):  # Prometheus text, not JSON
                assert "cifarlab_http_requests_total" in result.stdout, (command, result.stdout[:500])
            elif words(command)[0] == "curl":
                assert "error" not in json.loads(result.stdout), (command, result.stdout)  # JSON, not an error
    finally:
        helpers.stop_server(server)
    settings_table = subprocess.run([sys.executable, "-m", "cifarlab.web.settings"], cwd=clone, capture_output=True,
                                    text=True, timeout=60)
    assert settings_table.returncode == 0 and settings_table.stdout.strip() in (clone / "docs" / "configuration.md").read_text()
    after = contents(clone)
    assert {name: after.get(name) for name in before} == before  # tracked files untouched
    assert (clone / "runs" / "examples.csv").is_file()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def screenshots_manifest():
    """What the screenshots show: the served model file and its sidecar (by content hash), and how they were taken."""
    model = Path(settings.defaults()["MODEL_PATH"])
    return {"model": str(model.relative_to(REPO)), "model_sha256": sha256(model),
            "sidecar_sha256": sha256(modelfile.sidecar_path(model)),
            "command": "SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest tests/test_browser.py"}


def test_the_committed_screenshots_show_the_model_the_app_serves():
    taken = json.loads((SCREENSHOTS / SCREENSHOTS_MANIFEST).read_text())
    assert taken == screenshots_manifest(), f"the screenshots are older than the served model: run {taken['command']}"
    assert {p.name for p in SCREENSHOTS.glob("*.png")} >= {"index.png", "result.png", "batch.png", "phone.png"}
