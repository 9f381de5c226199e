"""Batch prediction: a folder (recursive), an archive (.tar.gz, .tar, .zip) or a text file of paths, classified into
CSV or JSON Lines. Worker processes decode with the app's own function while the model runs; the output is written in
atomic parts, so an interrupted run resumes where it stopped and never leaves a half-written file."""
import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import stat
import sys
import tarfile
import time
import zipfile
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import archives, children
from .errors import CifarlabError
from .atomic import replace_atomically, write_json
from .images import ImageError, preprocess_bytes
from .prediction import CSV_FIELDS
from .progress import Progress, count

BATCH = 256  # images per model call: the int8 file's in-process peak (docs/benchmarks.md)
PART_SIZE = 4096  # images per output part: the most an interruption costs to redo
WORKER_CHUNK = 32  # images per job sent to a decoding process: IPC overhead well under the decode time
MAX_FILE_BYTES = 64 * 2**20  # a larger file is an error row, never read into memory
CHUNK_BYTES = 16 * 2**20  # a job's input bytes (archive members) past which it is sent without waiting for 32 images
IN_FLIGHT_BYTES = 128 * 2**20  # archive bytes queued or being decoded at once: bounds a run's memory
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a CSV cell as a formula (OWASP)
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
FORMATS = (".csv", ".jsonl")


class BatchError(CifarlabError, ValueError):
    """A run that cannot start (bad input, output in the way, another run's parts); the message says why."""


@dataclass(frozen=True)
class Source:
    """What to classify: the items' names in a fixed order, and how to get their bytes."""
    path: Path
    kind: str  # folder, archive or list
    names: tuple

    def payloads(self, wanted):
        """(name, bytes or path or an error message) for the wanted names, in order; an archive is read once."""
        wanted = set(wanted)  # each name once: an archive may hold a member twice; the first one counts
        if self.kind == "folder":
            yield from ((name, self.path / name) for name in self.names if name in wanted)
        elif self.kind == "list":
            yield from ((name, Path(name)) for name in self.names if name in wanted)
        else:
            for member in archives.members(self.path):
                if member.name in wanted:
                    wanted.discard(member.name)
                    yield member.name, too_large(member.size) or member.read()


def too_large(size):
    """The error message for a file over MAX_FILE_BYTES, else None."""
    return f"larger than {MAX_FILE_BYTES // 2**20} MB: not read" if size > MAX_FILE_BYTES else None


def open_source(path):
    """The Source at path: a folder, an archive or a text file listing one path per line; BatchError if none."""
    path = Path(path)
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        return Source(path, "folder", tuple(names))
    if not path.is_file():
        raise BatchError(f"{path}: no such folder, archive or list of paths.")
    if path.name.endswith(ARCHIVES):
        try:
            names = [member.name for member in archives.members(path)]
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BatchError(f"{path}: not a readable archive ({exc}).") from None
        return Source(path, "archive", tuple(dict.fromkeys(names)))
    try:
        lines = path.read_text().splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise BatchError(f"{path}: not a folder, an archive ({', '.join(ARCHIVES)}) or a text list of paths "
                         f"({type(exc).__name__}).") from None
    return Source(path, "list", tuple(dict.fromkeys(line.strip() for line in lines
                                                    if line.strip() and not line.startswith("#"))))


def decode_many(payloads):
    """[(name, pixels or None, error or None)] for (name, bytes | path | error message) pairs; runs in a worker."""
    out = []
    for name, payload in payloads:
        try:
            if isinstance(payload, str):
                raise ImageError(payload)
            if isinstance(payload, Path):
                payload = read_regular_file(payload)
            out.append((name, preprocess_bytes(payload), None))
        except ImageError as exc:
            out.append((name, None, exc.message))
        except OSError as exc:
            out.append((name, None, f"cannot read the file: {exc.strerror or exc}"))
    return out


def read_regular_file(path):
    """The bytes of the regular file at path; ImageError for anything else (a device such as /dev/zero, a FIFO, a
    folder) or a file over MAX_FILE_BYTES, without blocking on it or reading more than that."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file (a device, pipe or folder): not read", "unsupported")
        data = f.read(MAX_FILE_BYTES + 1)  # the size may have grown since fstat
        refusal = too_large(max(info.st_size, len(data)))
        if refusal:
            raise ImageError(refusal, "too_large")
        return data


def decoded(pool, payloads, ahead=4):
    """(name, pixels, error) in input order, decoded by the pool; at most `ahead` jobs and IN_FLIGHT_BYTES of archive
    members in flight, so an archive of large members is never held in memory at once."""
    jobs, chunk, chunk_bytes, in_flight = deque(), [], 0, 0
    for pair in payloads:
        chunk.append(pair)
        chunk_bytes += len(pair[1]) if isinstance(pair[1], bytes) else 0
        if len(chunk) == WORKER_CHUNK or chunk_bytes >= CHUNK_BYTES:
            jobs.append((pool.submit(decode_many, chunk), chunk_bytes))
            in_flight += chunk_bytes
            chunk, chunk_bytes = [], 0
            while len(jobs) > ahead or in_flight > IN_FLIGHT_BYTES:
                job, size = jobs.popleft()
                in_flight -= size
                yield from job.result()
    if chunk:
        jobs.append((pool.submit(decode_many, chunk), chunk_bytes))
    for job, _ in jobs:
        yield from job.result()


class Writer:
    """Rows as CSV or JSON Lines: one header for CSV (path, verdict fields, top-3, one column per class, error)."""

    def __init__(self, suffix, class_names):
        self.suffix, self.class_names = suffix, list(class_names)

    def header(self):
        if self.suffix != ".csv":
            return ""
        return self._csv(["path", *(field.name for field in CSV_FIELDS), *self.class_names, "error"])

    def row(self, name, prediction=None, error=None):
        """One output line for a prediction, or for a file that could not be classified."""
        if self.suffix == ".jsonl":
            body = prediction.to_json() if prediction else {"error": error}
            return json.dumps({"path": name, **body}) + "\n"
        name = spreadsheet_text(name)  # file names and error messages come from whoever made the input
        if prediction is None:
            blank = [""] * (len(CSV_FIELDS) + len(self.class_names))
            return self._csv([name, *blank, spreadsheet_text(error)])
        return self._csv([name, *prediction.csv_cells(), ""])

    @staticmethod
    def _csv(values):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        return buffer.getvalue()


def spreadsheet_text(text):
    """text as a CSV cell a spreadsheet shows as text: one starting like a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_START) else text


def parts_folder(out):
    """Where a run keeps its finished parts until the output is complete."""
    return out.with_name(out.name + ".parts")


def check_run(source, out, classifier, part_size, resume, force):
    """(parts folder, manifest) for this run, started or found again; BatchError when the output or another run is in
    the way. The manifest records the sha256 of every finished part: --resume keeps only parts that match it."""
    if out.suffix not in FORMATS:
        raise BatchError(f"--out {out}: the output is chosen by its extension, one of {', '.join(FORMATS)}.")
    if out.exists() and not force:
        raise BatchError(f"{out} exists: outputs are never overwritten; give another --out, or --force.")
    parts = parts_folder(out)
    run = {"input": str(source.path.resolve()), "items": len(source.names), "part_size": part_size,
           "model_version": classifier.version, "format": out.suffix}
    if os.path.lexists(parts):
        if not resume:
            raise BatchError(f"{parts} holds an interrupted run: --resume to continue it, or remove it.")
        found = read_manifest(parts)
        if {key: found.get(key) for key in run} != run:
            raise BatchError(f"{parts} is another run's (input, model or part size differ): remove it to start over.")
        return parts, {**run, "parts": found.get("parts", {})}
    parts.mkdir(parents=True)
    manifest = {**run, "parts": {}}
    write_json(parts / "manifest.json", manifest)
    return parts, manifest


def read_manifest(parts):
    """The manifest of a parts folder this command wrote; BatchError for a symlink, a file or an unreadable one."""
    if parts.is_symlink() or not parts.is_dir() or (parts / "manifest.json").is_symlink():
        raise BatchError(f"{parts} is not a parts folder this command wrote (a symlink or a file): remove it.")
    try:
        found = json.loads((parts / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchError(f"{parts}/manifest.json cannot be read ({type(exc).__name__}): remove {parts} to start "
                         "over.") from None
    if not isinstance(found, dict) or not isinstance(found.get("parts", {}), dict):
        raise BatchError(f"{parts}/manifest.json is not this command's manifest: remove {parts} to start over.")
    return found


def read_part(path):
    """The bytes of a finished part, or None when it is missing or not a regular file (a symlink is never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None


def finished_part(path, manifest):
    """The bytes of the part at path if it is the one this run finished (its sha256 is in the manifest), else None."""
    data = read_part(path)
    return data if data is not None and manifest["parts"].get(path.name) == hashlib.sha256(data).hexdigest() else None


@dataclass
class Summary:
    """What an output holds (counts per class, files refused, verdicts) and how fast this run went."""
    classes: Counter
    verdicts: Counter
    refused: int = 0
    images_now: int = 0
    seconds: float = 0.0

    @classmethod
    def of_output(cls, out):
        """The counts of a finished CSV or JSON Lines output."""
        with open(out, newline="") as f:
            rows = csv.DictReader(f) if out.suffix == ".csv" else (json.loads(line) for line in f)
            summary = cls(Counter(), Counter())
            for row in rows:
                if row.get("error"):
                    summary.refused += 1
                else:
                    summary.classes[row["class"]] += 1
                    summary.verdicts[row["verdict"]] += 1
        return summary

    def lines(self):
        rate = self.images_now / self.seconds if self.seconds else 0.0
        per_class = ", ".join(f"{name} {count:,}" for name, count in self.classes.most_common())
        flagged = self.verdicts["unsure"] + self.verdicts["unknown"]
        return [f"{count(sum(self.classes.values()), 'image')} classified, {count(self.refused, 'file')} refused "
                f"(error rows); this run: {count(self.images_now, 'file')} in {self.seconds:,.1f} s ({rate:,.0f}/s)",
                f"verdicts: {self.verdicts['known']:,} known, {self.verdicts['unsure']:,} unsure, "
                f"{self.verdicts['unknown']:,} unknown ({flagged:,} flagged)",
                f"per class: {per_class or 'none'}"]


def predict_folder(source, out, classifier, workers=None, part_size=PART_SIZE, resume=False, force=False,
                   batch=BATCH, stream=None):
    """Classify every item of source into out (.csv or .jsonl); returns the Summary of the images classified now."""
    out = Path(out)
    parts, manifest = check_run(source, out, classifier, part_size, resume, force)
    writer = Writer(out.suffix, classifier.class_names)
    chunks = [source.names[i:i + part_size] for i in range(0, len(source.names), part_size)]
    part_path = [parts / f"part-{i:06d}{out.suffix}" for i in range(len(chunks))]
    todo = [i for i in range(len(chunks)) if finished_part(part_path[i], manifest) is None]
    started, done = time.perf_counter(), 0
    if todo:
        remaining = sum(len(chunks[i]) for i in todo)
        if len(todo) < len(chunks):
            print(f"resuming: {len(chunks) - len(todo)} of {len(chunks)} parts already done", file=stream or sys.stderr)
        redone = [part_path[i].name for i in todo if os.path.lexists(part_path[i])]
        if redone:
            print(f"classifying again {len(redone)} part(s) that do not match what this run wrote: "
                  f"{', '.join(redone[:5])}", file=stream or sys.stderr)
        progress = Progress(f"predict {source.path.name}", remaining, unit="files", every=10.0, stream=stream)
        wanted = [name for i in todo for name in chunks[i]]
        workers = workers or max(1, (os.cpu_count() or 2) - 1)
        # spawned, not forked: the parent may hold TensorFlow or LiteRT threads
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=children.die_with_parent, initargs=(os.getpid(),))
        try:
            stream_of = decoded(pool, source.payloads(wanted))
            for i in todo:
                lines = []
                for start in range(0, len(chunks[i]), batch):
                    group = [next(stream_of) for _ in chunks[i][start:start + batch]]
                    lines += classify_group(group, classifier, writer)
                    progress.update(len(group))
                    done += len(group)
                text = "".join(lines).encode()
                replace_atomically(part_path[i], lambda tmp: tmp.write_bytes(text))
                manifest["parts"][part_path[i].name] = hashlib.sha256(text).hexdigest()
                write_json(parts / "manifest.json", manifest)
        finally:  # interrupted: the queued jobs are dropped, not decoded first
            pool.shutdown(wait=False, cancel_futures=True)
    seconds = time.perf_counter() - started
    assemble(out, writer, part_path, manifest)
    shutil.rmtree(parts)
    summary = Summary.of_output(out)
    summary.images_now, summary.seconds = done, seconds
    return summary


def classify_group(group, classifier, writer):
    """Output lines for (name, pixels, error) triples, in their order: one model call for all decoded ones."""
    ok = [k for k, (_, pixels, _) in enumerate(group) if pixels is not None]
    predictions = dict(zip(ok, classifier.predict(np.stack([group[k][1] for k in ok])))) if ok else {}
    return [writer.row(name, predictions.get(k), error) for k, (name, _, error) in enumerate(group)]


def assemble(out, writer, part_paths, manifest):
    """The output file from its parts, atomically: readers see no file or the whole one. Each part is checked against
    the manifest as it is copied: a part changed since it was checked is never copied into the output."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(writer.header().encode())
            for path in part_paths:
                data = finished_part(path, manifest)
                if data is None:
                    raise BatchError(f"{path} changed while the output was written: run with --resume again.")
                f.write(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(out, write)
