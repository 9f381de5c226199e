"""The feedback loop end to end, on a real server, with its numbers: the recorded walk-through of docs/feedback.md.

    python tools/feedback_walkthrough.py flag       # serve the shipped model, send photos, flag 200 answers, review,
                                                    # export (about 3 minutes)
    python tools/feedback_walkthrough.py finetune   # train.py --feedback on CIFAR-10 + the export (about 30 minutes
                                                    # on 2 cores; run it under nohup)
    python tools/feedback_walkthrough.py canary     # publish it as a canary, send traffic, per-version figures,
                                                    # promote (about 3 minutes)
    python tools/feedback_walkthrough.py report     # the table of every stage's numbers

Everything lands in --out (default runs/walkthrough): the MODEL_DIR it serves, the SQLite feedback database, the
export, the fine-tuned model, server logs and walkthrough.json with each stage's figures and the commands it ran.

The users are simulated and know the truth: they send CIFAR-10 *training* images turned grey (a camera the model did
not train on; the test split stays untouched for scoring), flag every wrong answer with the right class, send some
drawn screenshots they flag "none of these", and one prankster flags right answers with a wrong class; the operator
accepts the honest flags and rejects the prankster's.
"""
import argparse
import base64
import collections
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cifarlab import REPO
from cifarlab.feedback.store import Store

sys.path.insert(0, str(REPO / "benchmarks"))
import loadtest  # noqa: E402  (benchmarks/ holds the server helpers the benchmarks share)

DATA = "../shared/data/cifar10-jpeg.tar.gz"
NAME = "cifar10"                    # the served model's name under MODEL_DIR
CORRECTIONS = 190                   # wrong answers users flag with the right class
NONE_FLAGS = 20                     # drawn faces and screenshots users flag "none of these" ...
NONE_TRIES = 320                    # ... out of at most this many (the model calls most of them unknown itself)
PRANKS = 10                         # right answers a prankster flags with a wrong class (review rejects them)
BATCH = 16                          # images per POST /api/predict
CANARY_SHARE = 0.5                  # share of clients the canary answers in the canary stage
CANARY_CLIENTS = 40                 # distinct X-Client-ID values in the canary stage ...
CANARY_IMAGES = 32                  # ... each sending this many images (half grey training images, half test images)
CREDENTIALS = "operator:walkthrough only"  # REVIEW_CREDENTIALS of the walk-through's server
FINETUNE_ARGS = ["--arch", "fast_oe", "--init", "model/cifar10_cnn.h5", "--teacher", "model/best.h5",
                 "--set", "outlier_exclude=noise", "--set", "augmix=0.5", "--set", "lr=0.1", "--epochs", "2"]


def grey(pixels):
    """An RGB photo as a grey camera would take it (still 3 channels)."""
    return np.asarray(Image.fromarray(pixels).convert("L").convert("RGB"))


def screenshot(rng):
    """A 32x32 drawing of a window with text lines and a button: none of the ten classes."""
    image = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 31, int(rng.integers(3, 7))], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
    for y in range(9, 28, int(rng.integers(3, 6))):
        draw.line([2, y, int(rng.integers(10, 30)), y], fill=(30, 30, 30))
    x = int(rng.integers(2, 20))
    draw.rectangle([x, 24, x + 10, 30], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image)


def face(rng):
    """A 32x32 drawn close-up of a human face, grey or in colour (the issue's "cat at 99 %" case): none of the
    classes."""
    skin = tuple(int(v) for v in rng.integers([170, 120, 90], [255, 200, 170]))
    image = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    top = int(rng.integers(0, 5))
    draw.ellipse([3, top, 28, 31 + top], fill=tuple(int(v) for v in rng.integers(0, 90, 3)))  # hair
    draw.ellipse([5, top + 5, 26, 31 + top], fill=skin)
    for x in (10, 19):
        draw.ellipse([x, top + 13, x + 3, top + 16], fill=(20, 20, 20))
    draw.line([15, top + 16, 15, top + 21], fill=tuple(max(0, c - 60) for c in skin))
    draw.arc([10, top + 18, 21, top + 26], 20, 160, fill=(120, 30, 30))
    if rng.random() < 0.5:
        image = image.convert("L").convert("RGB")
    return np.asarray(image)


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """gunicorn (gunicorn.conf.py) on MODEL_DIR with the walk-through's database, and an HTTP client for it."""

    def __init__(self, out, **settings):
        self.out, self.port = out, loadtest.free_port()
        env = {"BIND": f"127.0.0.1:{self.port}", "WEB_WORKERS": "2", "WEB_THREADS": "4",
               "MODEL_DIR": str(out / "models"), "MODEL_POLL_SECONDS": "1",
               "DATABASE_URL": f"sqlite:///{out / 'feedback.db'}", "FEEDBACK_FOLDER": str(out / "feedback"),
               "UPLOAD_FOLDER": str(out / "uploads"), "SECRET_KEY": os.urandom(16).hex(), "LOG_LEVEL": "warning",
               "GRADCAM": "false", "REVIEW_CREDENTIALS": CREDENTIALS, **settings}
        self.process = loadtest.start_server(loadtest.python_command("-m", "gunicorn", "-c", "gunicorn.conf.py"),
                                             self.port, env, log_path=str(out / "server.log"), timeout=180)
        self.operator = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.auth = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}

    def stop(self):
        loadtest.stop_server(self.process)

    def predict(self, images, client):
        """(answers, seconds) of one POST /api/predict of these pixel arrays from X-Client-ID `client`."""
        body, content_type = loadtest.multipart({}, [("file", f"{i}.png", png(x)) for i, x in enumerate(images)])
        started = time.perf_counter()
        status, reply = loadtest.request("POST", self.port, "/api/predict", body,
                                         {"Content-Type": content_type, "X-Client-ID": client})
        if status != 200:
            raise RuntimeError(f"POST /api/predict: {status} {reply[:200]!r}")
        return json.loads(reply), time.perf_counter() - started

    def flag(self, answer_id, label):
        status, reply = loadtest.request("POST", self.port, "/api/feedback",
                                         json.dumps({"id": answer_id, "label": label}).encode(),
                                         {"Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"POST /api/feedback: {status} {reply[:200]!r}")

    def operator_get(self, path):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=self.auth)
        with self.operator.open(request, timeout=60) as reply:
            return reply.read().decode()

    def decide(self, answer_id, decision, token):
        data = urllib.parse.urlencode({"decision": decision, "csrf_token": token}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/review/{answer_id}", data, self.auth)
        with self.operator.open(request, timeout=60) as reply:  # 303 to /review, followed
            return reply.status

    def metrics(self):
        status, reply = loadtest.request("GET", self.port, "/metrics")
        return reply.decode()


def samples(text, metric):
    """{labels string: value} of one metric's samples in Prometheus's text format."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"{metric}\{{(.*)\}} (\S+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def load_record(out):
    path = out / "walkthrough.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_record(out, stage, figures):
    record = load_record(out)
    record[stage] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **figures}
    text = json.dumps(record, indent=1).replace(f"{REPO}/", "")  # paths relative to the repository
    (out / "walkthrough.json").write_text(text + "\n")


def training_images(data_path):
    from cifarlab.ml.data import load_image_folder
    data = load_image_folder(data_path)
    return data, np.random.default_rng(2026).permutation(len(data.y_train))


def stage_flag(args):
    out = args.out
    if (out / "feedback.db").exists():
        sys.exit(f"{out} already holds a walk-through: remove it or give another --out")
    version = out / "models" / NAME / "1"
    version.mkdir(parents=True)
    for file in ("cifar10_cnn.h5", "cifar10_cnn.json"):
        shutil.copyfile(REPO / "model" / file, version / file)
    data, order = training_images(args.data)
    classes = data.class_names
    rng = np.random.default_rng(7)
    server = Server(out)
    figures = collections.Counter()
    honest, pranks = [], []
    try:
        taken = 0
        while figures["corrections"] < CORRECTIONS or len(pranks) < PRANKS:
            picked = order[taken:taken + BATCH]
            taken += BATCH
            reply, _ = server.predict([grey(data.x_train[i]) for i in picked], f"user-{taken // BATCH % 25}")
            for i, answer in zip(picked, reply["predictions"]):
                truth = classes[data.y_train[i]]
                figures["grey sent"] += 1
                figures["grey right"] += answer["class"] == truth
                if answer["class"] != truth and figures["corrections"] < CORRECTIONS:
                    server.flag(answer["id"], truth)
                    honest.append(answer["id"])
                    figures["corrections"] += 1
                elif answer["class"] == truth and len(pranks) < PRANKS and rng.random() < 0.1:
                    server.flag(answer["id"], classes[(data.y_train[i] + 1) % len(classes)])
                    pranks.append(answer["id"])
        np.save(out / "grey_used.npy", order[:taken])
        while figures["none flags"] < NONE_FLAGS and figures["drawings sent"] < NONE_TRIES:
            drawings = [(face if k % 2 else screenshot)(rng) for k in range(BATCH)]
            reply, _ = server.predict(drawings, "user-drawings")
            for k, answer in enumerate(reply["predictions"]):
                figures["drawings sent"] += 1
                figures[f"{'faces' if k % 2 else 'screenshots'} {answer['verdict']}"] += 1
                if answer["verdict"] != "unknown" and figures["none flags"] < NONE_FLAGS:
                    server.flag(answer["id"], "none")
                    honest.append(answer["id"])
                    figures["none flags"] += 1
        page = server.operator_get("/review")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        figures["waiting for review"] = int(re.search(r"([\d,]+) answers wait", page).group(1).replace(",", ""))
        started = time.perf_counter()
        for answer_id in honest:
            server.decide(answer_id, "accept", token)
        for answer_id in pranks:
            server.decide(answer_id, "reject", token)
        figures["review seconds"] = round(time.perf_counter() - started, 1)
        figures["accepted"], figures["rejected"] = len(honest), len(pranks)
        figures["flags in /metrics"] = sum(samples(server.metrics(), "cifarlab_flags_total").values())
    finally:
        server.stop()
    export = out / "export"
    command = [sys.executable, "train.py", "feedback", "export", "--out", str(export), "--reviewed"]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "DATABASE_URL": f"sqlite:///{out / 'feedback.db'}",
                                                        "FEEDBACK_FOLDER": str(out / "feedback")})
    figures["exported class images"] = len(list((export / "train").glob("*/*.png")))
    figures["exported outliers"] = len(list((export / "outliers").glob("*.png")))
    figures["grey accuracy %"] = round(100 * figures["grey right"] / figures["grey sent"], 1)
    save_record(out, "flag", dict(figures))
    print(json.dumps(dict(figures), indent=1))


def stage_finetune(args):
    command = [sys.executable, "train.py", "--data", args.data, *FINETUNE_ARGS, "--feedback", str(args.out / "export"),
               "--out", str(args.out / "finetuned")]
    print(" ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, check=True)
    meta = json.loads((args.out / "finetuned.json").read_text())
    save_record(args.out, "finetune", {"train command": " ".join(command[1:]), "minutes": round(
        (time.monotonic() - started) / 60, 1), **meta["feedback"]})


def run_models(args, *words):
    command = [sys.executable, "train.py", "models", "--model-dir", str(args.out / "models"), "--name", NAME, *words]
    return subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def stage_canary(args):
    out = args.out
    published = run_models(args, "publish", str(out / "finetuned.h5"))
    data, order = training_images(args.data)
    used = set(np.load(out / "grey_used.npy").tolist())
    fresh = [i for i in order if i not in used]
    test_order = np.random.default_rng(11).permutation(len(data.y_test))
    classes = data.class_names
    server = Server(out, CANARY_SHARE=str(CANARY_SHARE))
    per_version = collections.defaultdict(collections.Counter)
    latencies = collections.defaultdict(list)
    try:
        half = CANARY_IMAGES // 2
        for client in range(CANARY_CLIENTS):
            grey_part = fresh[client * half:(client + 1) * half]
            test_part = test_order[client * half:(client + 1) * half]
            images = [grey(data.x_train[i]) for i in grey_part] + [data.x_test[i] for i in test_part]
            truths = [classes[data.y_train[i]] for i in grey_part] + [classes[data.y_test[i]] for i in test_part]
            for start in range(0, len(images), BATCH):
                reply, seconds = server.predict(images[start:start + BATCH], f"client-{client}")
                version = str(reply["model"]["served_version"])
                latencies[version].append(seconds)
                counts = per_version[version]
                counts["clients"] += start == 0
                for k, answer in enumerate(reply["predictions"]):
                    kind = "grey" if start + k < half else "test"
                    truth = truths[start + k]
                    counts[f"{kind} images"] += 1
                    counts[f"{kind} right"] += answer["class"] == truth
                    counts[answer["verdict"]] += 1
                    if answer["class"] != truth:
                        server.flag(answer["id"], truth)
                        counts["flags"] += 1
        metrics = server.metrics()
        promoted = run_models(args, "promote")
        time.sleep(3)  # MODEL_POLL_SECONDS=1: every worker has seen the new labels
        reply, _ = server.predict([data.x_test[i] for i in test_order[-BATCH:]], "client-0")
        after = str(reply["model"]["served_version"])
    finally:
        server.stop()
    flags_metric = samples(metrics, "cifarlab_flags_total")
    figures = {"published": published, "promoted": promoted, "answered by after promote": after, "versions": {}}
    for version, counts in sorted(per_version.items()):
        figures["versions"][version] = {
            "clients": counts["clients"], "images": counts["grey images"] + counts["test images"],
            "grey accuracy %": round(100 * counts["grey right"] / max(1, counts["grey images"]), 1),
            "test accuracy %": round(100 * counts["test right"] / max(1, counts["test images"]), 1),
            "verdicts": {v: counts[v] for v in ("known", "unsure", "unknown")},
            "flags sent": counts["flags"],
            "flags in /metrics": flags_metric.get(f'model="{NAME}",version="{version}"', 0.0),
            "p50 ms per request": round(1000 * float(np.median(latencies[version])), 1)}
    store = Store.open(f"sqlite:///{out / 'feedback.db'}", out / "feedback")
    figures["review page per version"] = [f"{name} v{version}: {flags} flags on {total} answers ({rate:.1%})"
                                          for name, version, total, flags, rate in store.counts()["per_version"]]
    save_record(out, "canary", figures)
    print(json.dumps(figures, indent=1))


def stage_report(args):
    record = load_record(args.out)
    for stage, figures in record.items():
        print(f"## {stage}\n")
        for key, value in figures.items():
            print(f"- {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
        print()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("flag", "finetune", "canary", "report"))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "walkthrough", help="where everything lands")
    p.add_argument("--data", default=DATA, help="the image-folder archive (its train split gives the photos)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    {"flag": stage_flag, "finetune": stage_finetune, "canary": stage_canary, "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
