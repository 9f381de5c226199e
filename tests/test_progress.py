"""Progress lines and counts."""
import io

import pytest

from cifarlab.progress import Progress, count


def test_progress_says_what_how_far_how_fast_and_how_long_is_left():
    now, out = [0.0], io.StringIO()
    progress = Progress("evaluate: test split", 1000, every=5, stream=out, clock=lambda: now[0])
    now[0] = 2.0
    progress.update(100)  # too soon for a line
    now[0] = 10.0
    progress.update(150)
    now[0] = 40.0
    progress.update(750)
    assert out.getvalue().splitlines() == [
        "evaluate: test split: 1,000 images ...",
        "evaluate: test split: 250/1,000 images (25/s, about 30 s left)",
        "evaluate: test split: 1,000/1,000 images (25/s, done in 40 s)",
    ]


@pytest.mark.parametrize("number,noun,text", [(1, "file", "1 file"), (0, "file", "0 files"),
                                              (2003, "image", "2,003 images")])
def test_a_count_is_plural_only_where_it_needs_to_be(number, noun, text):
    assert count(number, noun) == text
