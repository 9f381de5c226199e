"""Answers and flags per day, model version, verdict and predicted class, filled from the answers still stored: the
operators' "what users send" page and its gauges outlive the answers, which are pruned after a day."""
import collections
import datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade():
    daily = op.create_table(
        "daily",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("model_name", sa.String(128), primary_key=True),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("verdict", sa.String(16), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("answers", sa.Integer, nullable=False),
        sa.Column("flags", sa.Integer, nullable=False),
    )
    answers = sa.table("answers", sa.column("created_at", sa.DateTime(timezone=True)), sa.column("model_name"),
                       sa.column("model_version"), sa.column("verdict"), sa.column("label"), sa.column("flag"))
    counts = collections.defaultdict(lambda: [0, 0])
    rows = op.get_bind().execute(sa.select(answers.c.created_at, answers.c.model_name, answers.c.model_version,
                                           answers.c.verdict, answers.c.label, answers.c.flag))
    for created_at, *key, flag in rows:
        tally = counts[(utc_day(created_at), *key)]
        tally[0] += 1
        tally[1] += flag is not None
    if counts:
        op.bulk_insert(daily, [{"day": day, "model_name": name, "model_version": version, "verdict": verdict,
                                "label": label, "answers": total, "flags": flags}
                               for (day, name, version, verdict, label), (total, flags) in counts.items()])


def utc_day(stamp):
    """The UTC date of a stored time (SQLite hands it back without its zone, which was UTC)."""
    return (stamp.astimezone(datetime.timezone.utc) if stamp.tzinfo else stamp).date()


def downgrade():
    op.drop_table("daily")
