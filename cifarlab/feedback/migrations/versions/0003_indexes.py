"""Partial indexes, so that the room check of each flag, the review queue and its counts read only the kept answers
(a full scan of 200,000 waiting answers made a flag cost ~130 ms; benchmarks/bench_feedback.py)."""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

KEPT = {"sqlite": "flag IS NOT NULL OR sampled = 1", "postgresql": "flag IS NOT NULL OR sampled"}


def where(kept_and=""):
    """The dialect's partial-index predicate: kept answers (flagged or sampled), with an extra condition."""
    return {f"{dialect}_where": sa.text(f"{kept_and}({predicate})") for dialect, predicate in KEPT.items()}


def upgrade():
    op.drop_index("ix_answers_queue", "answers")  # walked every unreviewed answer, kept or not
    op.create_index("ix_answers_kept", "answers", ["image_bytes"], **where())
    op.create_index("ix_answers_waiting", "answers", ["confidence", "created_at"], **where("review IS NULL AND "))
    op.create_index("ix_answers_flagged", "answers", ["label"], sqlite_where=sa.text("flag IS NOT NULL"),
                    postgresql_where=sa.text("flag IS NOT NULL"))
    op.create_index("ix_answers_version", "answers", ["model_name", "model_version", "flag"])


def downgrade():
    for name in ("ix_answers_version", "ix_answers_flagged", "ix_answers_waiting", "ix_answers_kept"):
        op.drop_index(name, "answers")
    op.create_index("ix_answers_queue", "answers", ["review", "confidence"])
