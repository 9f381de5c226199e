"""What-users-send figures: per-day verdicts and flags, class mix against the prior, confused pairs, the drift rule."""
import datetime
from collections import namedtuple

import pytest

from cifarlab.feedback import insights

Row = namedtuple("Row", "day model_name model_version verdict label answers flags")
CLASSES = ("cat", "dog", "frog")
TODAY = datetime.date(2026, 12, 6)


def day(offset):
    return TODAY - datetime.timedelta(days=offset)


def summarise(rows=(), pairs=(), prior=None, expected=0.04, days=7):
    return insights.summarise(rows, pairs, CLASSES, prior, expected, days, TODAY)


def test_days_in_the_window_are_filled_oldest_first_and_older_rows_left_out():
    sent = summarise([Row(day(0), "m", "1", "known", "cat", 8, 2), Row(day(0), "m", "2", "unknown", "dog", 2, 0),
                      Row(day(2), "m", "1", "unsure", "frog", 5, 1), Row(day(9), "m", "1", "known", "cat", 99, 9)])
    assert [d.day for d in sent.days] == [day(k) for k in range(6, -1, -1)]
    assert sent.days[-1].verdicts == {"known": 8, "unsure": 0, "unknown": 2} and sent.days[-1].flags == 2
    assert sent.days[-1].flag_rate == pytest.approx(0.2) and sent.days[-1].unknown_share == pytest.approx(0.2)
    assert sent.days[0].answers == 0 and sent.days[0].flag_rate == 0.0
    assert sent.answers == 15 and sent.flags == 3 and sent.verdict_share("unsure") == pytest.approx(5 / 15)


def test_the_class_mix_counts_known_and_unsure_answers_against_the_sidecar_prior_or_a_uniform_one():
    rows = [Row(day(0), "m", "1", "known", "cat", 6, 0), Row(day(0), "m", "1", "unsure", "dog", 2, 0),
            Row(day(0), "m", "1", "unknown", "frog", 50, 0)]
    sent = summarise(rows, prior={"cat": 1, "dog": 1, "frog": 2})
    assert sent.class_mix == (("cat", 0.75, 0.25), ("dog", 0.25, 0.25), ("frog", 0.0, 0.5))
    assert sent.prior_source == "the model's training images"
    uniform = summarise(rows, prior={"cat": 5})  # counts that miss a class are not a prior
    assert [prior for _, _, prior in uniform.class_mix] == pytest.approx([1 / 3] * 3)
    assert uniform.prior_source.startswith("uniform")


def test_confused_pairs_follow_review_and_leave_out_rejected_right_and_none_flags():
    pairs = [("cat", "dog", None, None, 3), ("cat", "dog", "accepted", "dog", 2), ("cat", "frog", "rejected", None, 9),
             ("cat", "frog", "relabelled", "dog", 1), ("dog", "cat", None, None, 4), ("dog", "none", None, None, 7),
             ("frog", "correct", None, None, 5), ("frog", "frog", None, None, 1), ("dog", "dog", "relabelled", "frog", 2)]
    assert summarise(pairs=pairs).confused == (("cat", "dog", 6), ("dog", "cat", 4), ("dog", "frog", 2))


@pytest.mark.parametrize("unknown, total, expected, drifting", [
    (40, 200, 0.04, True),     # 20 % against 4 %
    (12, 200, 0.04, False),    # 6 %: within the noise of 200 answers
    (30, 99, 0.04, False),     # too few answers to judge
    (900, 1000, None, False),  # no reference rate
    (3, 100, 0.0, True),       # a model that never said unknown on held-out images
    (0, 100, 0.0, False),
])
def test_drift_is_an_unknown_share_well_above_the_expected_rate(unknown, total, expected, drifting):
    rows = [Row(day(0), "m", "1", "unknown", "cat", unknown, 0), Row(day(0), "m", "1", "known", "cat", total - unknown, 0)]
    sent = summarise(rows, expected=expected)
    assert (sent.drift is not None) is drifting
    if drifting:
        assert sent.drift.day == TODAY and sent.drift.answers == total


def test_drift_is_judged_on_the_latest_day_with_enough_answers():
    drifted_yesterday = [Row(day(1), "m", "1", "unknown", "cat", 80, 0), Row(day(1), "m", "1", "known", "cat", 20, 0),
                         Row(day(0), "m", "1", "unknown", "cat", 5, 0)]  # today: too few to judge yet
    assert summarise(drifted_yesterday).drift.day == day(1)
    recovered_today = drifted_yesterday + [Row(day(0), "m", "1", "known", "cat", 195, 0)]
    assert summarise(recovered_today).drift is None
