"""What users send, in figures: verdict mix and flag rate per day, class mix against the training prior, the pairs
users correct most, and whether the unknown share has drifted above the rate the model showed on held-out images.

Pure functions of the store's daily counts and flag pairs; the operators' page (/review/traffic) and the Prometheus
gauges (cifarlab_sent_*) both show `summarise`'s result.
"""
import datetime
import math
from dataclasses import dataclass

VERDICTS = ("known", "unsure", "unknown")
DRIFT_MIN_ANSWERS = 100  # a day with fewer answers is too small to call drift on
DRIFT_RATIO = 2.0        # drift: the unknown share at least this many times the expected rate ...
DRIFT_SIGMAS = 4.0       # ... and this many binomial standard deviations above it
CONFUSED_PAIRS = 10      # the most frequent (predicted, flagged as) pairs shown


@dataclass(frozen=True)
class Day:
    """One UTC day's answers by verdict, and the flags those answers received."""

    day: datetime.date
    verdicts: dict
    flags: int

    @property
    def answers(self):
        return sum(self.verdicts.values())

    @property
    def flag_rate(self):
        return self.flags / self.answers if self.answers else 0.0

    @property
    def unknown_share(self):
        return self.verdicts["unknown"] / self.answers if self.answers else 0.0


@dataclass(frozen=True)
class Insights:
    """The last days' figures (see the module docstring); `drift` is the day that raised the warning, or None."""

    days: tuple
    class_mix: tuple         # (class, share of the window's known and unsure answers, training prior share)
    prior_source: str
    confused: tuple          # (predicted, flagged as, count), most frequent first
    expected_unknown: float  # None when the served model's sidecar has no reference rate
    drift: Day

    @property
    def answers(self):
        return sum(day.answers for day in self.days)

    @property
    def flags(self):
        return sum(day.flags for day in self.days)

    @property
    def flag_rate(self):
        return self.flags / self.answers if self.answers else 0.0

    def verdict_share(self, verdict):
        return sum(day.verdicts[verdict] for day in self.days) / self.answers if self.answers else 0.0


def window(days, today):
    """The UTC dates of the last `days` days, today included, oldest first."""
    return [today - datetime.timedelta(days=k) for k in range(days - 1, -1, -1)]


def summarise(daily_rows, flag_pairs, class_names, prior, expected_unknown, days, today):
    """Insights of the last `days` days (to `today`, UTC) from the store's daily_counts and flag_pairs."""
    dates = window(days, today)
    verdicts = {date: dict.fromkeys(VERDICTS, 0) for date in dates}
    flags = dict.fromkeys(dates, 0)
    per_class = dict.fromkeys(class_names, 0)
    for row in daily_rows:
        if row.day not in verdicts:
            continue
        verdicts[row.day][row.verdict] = verdicts[row.day].get(row.verdict, 0) + row.answers
        flags[row.day] += row.flags
        if row.verdict != "unknown" and row.label in per_class:
            per_class[row.label] += row.answers
    per_day = tuple(Day(date, verdicts[date], flags[date]) for date in dates)
    counted = sum(per_class.values())
    prior_shares, prior_source = prior_of(prior, class_names)
    class_mix = tuple((name, per_class[name] / counted if counted else 0.0, prior_shares[name])
                      for name in class_names)
    return Insights(per_day, class_mix, prior_source, confused_pairs(flag_pairs, class_names), expected_unknown,
                    drifting_day(per_day, expected_unknown))


def prior_of(counts, class_names):
    """({class: share of the training images}, where it came from): the sidecar's counts, else uniform."""
    if counts and set(counts) >= set(class_names) and sum(counts[name] for name in class_names) > 0:
        total = sum(counts[name] for name in class_names)
        return {name: counts[name] / total for name in class_names}, "the model's training images"
    return {name: 1 / len(class_names) for name in class_names}, "uniform (the model's sidecar records no class counts)"


def confused_pairs(flag_pairs, class_names):
    """(predicted, flagged as, count) of answers users said were another class, most frequent first: review's label
    where review changed it, none where review rejected the flag."""
    counts = {}
    for predicted, flag, review, review_label, count in flag_pairs:
        said = review_label if review == "relabelled" else flag
        if review == "rejected" or said not in class_names or said == predicted:
            continue
        counts[(predicted, said)] = counts.get((predicted, said), 0) + count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple((predicted, said, count) for (predicted, said), count in ranked[:CONFUSED_PAIRS])


def is_drift(day, expected):
    """True when a day's unknown share is well above the expected rate (see DRIFT_*), on enough answers."""
    if expected is None or day.answers < DRIFT_MIN_ANSWERS:
        return False
    spread = math.sqrt(max(expected * (1 - expected), 1e-12) / day.answers)
    return day.unknown_share > max(DRIFT_RATIO * expected, expected + DRIFT_SIGMAS * spread)


def drifting_day(per_day, expected):
    """The latest day with enough answers to judge, when it drifts; else None."""
    judged = [day for day in per_day if day.answers >= DRIFT_MIN_ANSWERS]
    return judged[-1] if judged and is_drift(judged[-1], expected) else None
