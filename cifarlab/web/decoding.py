"""Uploaded bytes to model inputs: one header pass per image for the budget and the decode, run in decoder processes
that a hostile file cannot hurt the server from (an address-space limit, killed at the request's deadline).

The web process never parses an upload itself when a DecoderPool is used: a decoder that runs past the deadline is
killed and replaced, one that runs out of memory answers 413 (or dies and is replaced), and the worker's threads wait
on a pipe meanwhile, so other requests keep being answered.
"""
import multiprocessing
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from .. import children, images, memory
from ..images import ImageError
from .context import parts
from .storage import display_copy

@dataclass
class Item:
    """One uploaded image: its name, model input and display copy or the reason it was refused, its prediction."""

    filename: str
    pixels: np.ndarray = None  # (size, size, 3) uint8 model input
    image: object = None  # RGB PIL display copy, at most storage.DISPLAY_MAX_SIDE per side
    error: ImageError = None
    prediction: object = None  # inference.Prediction
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """What one request may spend on decoding: pixels per image, pixels in all, seconds."""

    max_image_pixels: int
    max_request_pixels: int
    deadline_s: float

    @classmethod
    def from_config(cls, config):
        return cls(config["MAX_IMAGE_PIXELS"], config["MAX_REQUEST_PIXELS"], config["REQUEST_DEADLINE"])


class OverBudget(ImageError):
    """The request's images together would decode to more pixels than the budget: refused before decoding."""

    def __init__(self, pixels, limit):
        super().__init__(f"The images in this request would cost {pixels:,} pixel decodes (each scan of a progressive "
                         f"JPEG counts); the limit is {limit:,} per request. Send fewer or smaller images.", "over_budget")
        self.pixels, self.limit = pixels, limit

    def __reduce__(self):
        return type(self), (self.pixels, self.limit)


def clean_filename(name, limit=200):
    """A client-supplied file name fit for display and JSON (never used as a path)."""
    name = "".join(ch for ch in (name or "") if ch.isprintable())
    return name[:limit] or "upload"


def past_deadline(budget):
    """The ImageError of an image not decoded because the request ran out of time."""
    return ImageError(f"Not decoded: the request ran past its {budget.deadline_s:g} s limit; "
                      "send fewer or smaller images.", "late")


def open_all(named_payloads, budget):
    """[Opened or ImageError], one header pass per image; OverBudget (nothing left open) when they cost too much."""
    opened = []
    for _, data in named_payloads:
        try:
            opened.append(images.open_image(data, budget.max_image_pixels))
        except ImageError as exc:
            opened.append(exc)
    total = sum(o.cost for o in opened if isinstance(o, images.Opened))
    if total > budget.max_request_pixels:
        for o in opened:
            if isinstance(o, images.Opened):
                o.close()
        raise OverBudget(total, budget.max_request_pixels)
    return opened


def decode_opened_items(named_payloads, opened, input_size, budget, started):
    """Yield (index, Item) in order: each opened image decoded, or its ImageError; 503 for those past the deadline."""
    for index, ((filename, _), image) in enumerate(zip(named_payloads, opened)):
        item = Item(filename=clean_filename(filename))
        if isinstance(image, ImageError):
            item.error = image
        elif time.monotonic() - started > budget.deadline_s:
            image.close()
            item.error = past_deadline(budget)
        else:
            try:
                decoded = images.decode_opened(image)
                item.pixels = images.to_model_input(decoded, input_size)
                item.image = display_copy(decoded)
                del decoded  # only the model input and the display copy outlive this step
            except ImageError as exc:
                item.error = exc
            finally:
                image.close()  # frees the full-size pixels now, not when the request's list of images goes
        opened[index] = None
        yield index, item


def decode_items(named_payloads, input_size, budget, started=None, pool=None):
    """[(filename, bytes)] -> [Item], each with its model input or the ImageError that refused it, in `pool`'s decoder
    processes when one is given, else here.

    Raises OverBudget (before decoding anything) when the images together exceed the request's pixel budget;
    images not reached before the deadline (from `started`, a time.monotonic()) are refused with a 503.
    """
    started = time.monotonic() if started is None else started
    if pool is not None:
        return pool.decode(named_payloads, input_size, budget, started)
    opened = open_all(named_payloads, budget)
    return [item for _, item in decode_opened_items(named_payloads, opened, input_size, budget, started)]


def _decoder_main(conn, memory_limit):
    """A decoder process: for each request, send ("opened",), then ("item", index, Item) per image, then ("done",);
    ("over", pixels, limit) instead when the request is over its budget. Ends when the web process closes the pipe."""
    children.die_with_parent()  # its parent is the fork server, which ends with the web process
    memory.limit_address_space(memory_limit)
    while True:
        try:
            named_payloads, input_size, budget, elapsed = conn.recv()
        except (EOFError, OSError):
            return
        started = time.monotonic() - elapsed
        try:
            opened = open_all(named_payloads, budget)
        except OverBudget as exc:
            conn.send(("over", exc.pixels, exc.limit))
            continue
        conn.send(("opened",))
        for index, item in decode_opened_items(named_payloads, opened, input_size, budget, started):
            conn.send(("item", index, item))
        conn.send(("done",))


@dataclass(eq=False)  # hashed by identity: the pool keeps a set of live decoders
class _Decoder:
    process: multiprocessing.Process
    conn: object  # the web process's end of the pipe

    def stop(self):
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


def _stop_all(decoders):
    for decoder in list(decoders):
        decoder.stop()
    decoders.clear()


class DecoderPool:
    """Up to `size` decoder processes, one request at a time each, each limited to `memory_limit` bytes beyond its
    start-up size; started from a fork server (never forked from a threaded web worker), on first use."""

    def __init__(self, size, memory_limit):
        self.memory_limit = memory_limit
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])  # decoders start with numpy and Pillow already imported
        self._slots = threading.BoundedSemaphore(size)
        self._idle = queue.LifoQueue()
        self._live = set()
        self._lock = threading.Lock()
        weakref.finalize(self, _stop_all, self._live)

    def warm_up(self):
        """Start one decoder now (and the fork server with it), so the first upload does not wait for them."""
        self._idle.put(self._take())

    def close(self):
        """Stop every decoder."""
        with self._lock:
            _stop_all(self._live)

    def _take(self):
        """An idle live decoder, or a new one."""
        while True:
            try:
                decoder = self._idle.get_nowait()
            except queue.Empty:
                break
            if decoder.process.is_alive():
                return decoder
            self._discard(decoder)
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(target=_decoder_main, args=(child_end, self.memory_limit),
                                        name="cifarlab-decoder", daemon=True)
        with self._lock:
            process.start()
            decoder = _Decoder(process, parent_end)
            self._live.add(decoder)
        child_end.close()
        return decoder

    def _discard(self, decoder):
        with self._lock:
            self._live.discard(decoder)
        decoder.stop()

    def decode(self, named_payloads, input_size, budget, started):
        """decode_items in a decoder process; one that runs past the deadline is killed, one that dies is replaced."""
        deadline = started + budget.deadline_s
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return [Item(clean_filename(name), error=past_deadline(budget)) for name, _ in named_payloads]
        try:
            items = {}
            while len(items) < len(named_payloads):
                pending = [i for i in range(len(named_payloads)) if i not in items]
                self._run(pending, named_payloads, input_size, budget, started, deadline, items)
            return [items[i] for i in range(len(named_payloads))]
        finally:
            self._slots.release()

    def _run(self, pending, named_payloads, input_size, budget, started, deadline, items):
        """Send the pending images to one decoder and collect its answers into items (index -> Item)."""
        decoder = self._take()
        names = [clean_filename(named_payloads[i][0]) for i in pending]
        opened = False
        try:
            decoder.conn.send(([named_payloads[i] for i in pending], input_size, budget, time.monotonic() - started))
            while True:
                if not decoder.conn.poll(max(0.0, deadline - time.monotonic())):
                    self._discard(decoder)  # killed mid-decode: the deadline holds whatever the file does
                    for i, name in zip(pending, names):
                        items.setdefault(i, Item(name, error=past_deadline(budget)))
                    return
                message = decoder.conn.recv()
                if message[0] == "over":
                    self._idle.put(decoder)
                    raise OverBudget(message[1], message[2])
                if message[0] == "opened":
                    opened = True
                elif message[0] == "item":
                    items[pending[message[1]]] = message[2]
                else:
                    self._idle.put(decoder)
                    return
        except (EOFError, OSError):  # the decoder died (memory limit inside a C decoder, a crash): replace it
            self._discard(decoder)
            crashed = ImageError("The decoder stopped on this image: it needs more memory than a decoder may use, or is "
                                 "built to crash decoders.", "memory")
            left = [(i, name) for i, name in zip(pending, names) if i not in items]
            for i, name in (left if not opened else left[:1]):  # before "opened", any header may have been the cause
                items[i] = Item(name, error=crashed)


def init_app(app):
    """The app's decoder processes (see make_decoders)."""
    parts(app).decoders = make_decoders(app.config)


def make_decoders(config):
    """The pool of decoder processes (None when DECODE_PROCESSES is 0); outside tests one decoder starts now."""
    if not config["DECODE_PROCESSES"]:
        return None
    pool = DecoderPool(config["DECODE_PROCESSES"], config["DECODE_MEMORY"])
    if not config["TESTING"]:
        pool.warm_up()
    return pool
