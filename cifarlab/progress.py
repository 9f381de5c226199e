"""Progress lines for long commands: what is being done, how far, how fast, and how long is left."""
import sys
import time


def count(number, noun):
    """'1 file', '2,003 files': a number with its noun, plural where it needs one."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


class Progress:
    """Counts work done and prints 'label: done/total (rate/s, about N s left)' at most every `every` seconds."""

    def __init__(self, label, total, unit="images", every=10.0, stream=None, clock=time.monotonic):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream, self.clock = stream or sys.stderr, clock
        self.done, self.started = 0, clock()
        self.printed = self.started
        print(f"{label}: {total:,} {unit} ...", file=self.stream, flush=True)

    def update(self, count):
        """Add count to the work done; print a line when `every` seconds have passed since the last, or at the end."""
        self.done += count
        now = self.clock()
        if now - self.printed >= self.every or self.done >= self.total:
            self.printed = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now):
        """The progress line at time now."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s"
        if self.done >= self.total:
            return f"{text}, done in {elapsed:,.0f} s)"
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{text}, about {left:,.0f} s left)"
