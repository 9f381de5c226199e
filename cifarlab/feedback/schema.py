"""The feedback database's tables (SQLAlchemy Core); the migrations in migrations/versions build them step by step."""
from sqlalchemy import Boolean, Column, Date, DateTime, Float, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

answers = Table(
    "answers", metadata,
    Column("id", String(32), primary_key=True),           # unguessable (secrets.token_urlsafe), given to the user
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("image_sha256", String(64), nullable=False),   # the 32x32 model input, stored once as <sha256>.png
    Column("image_bytes", Integer, nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("label", String(64), nullable=False),          # the predicted class
    Column("class_index", Integer, nullable=False),
    Column("confidence", Float, nullable=False),          # calibrated top probability
    Column("probabilities", Text, nullable=False),        # JSON list, in class order
    Column("ood_score", Float, nullable=False),
    Column("verdict", String(16), nullable=False),        # known, unsure or unknown
    Column("sampled", Boolean, nullable=False, default=False),  # kept for review by the sampling rule
    Column("flag", String(64)),                           # "correct", "none" or a class name; None: no flag
    Column("flagged_at", DateTime(timezone=True)),
    Column("review", String(16)),                         # accepted, relabelled or rejected; None: not reviewed
    Column("review_label", String(64)),                   # the label review settled on ("none": no class)
    Column("reviewed_at", DateTime(timezone=True)),
    # partial: only kept answers (flagged or sampled), so a flag's room check and the review queue never scan the rest
    Index("ix_answers_kept", "image_bytes", sqlite_where=text("(flag IS NOT NULL OR sampled = 1)"),
          postgresql_where=text("(flag IS NOT NULL OR sampled)")),
    Index("ix_answers_waiting", "confidence", "created_at",
          sqlite_where=text("review IS NULL AND (flag IS NOT NULL OR sampled = 1)"),
          postgresql_where=text("review IS NULL AND (flag IS NOT NULL OR sampled)")),
    Index("ix_answers_flagged", "label", sqlite_where=text("flag IS NOT NULL"),
          postgresql_where=text("flag IS NOT NULL")),
    Index("ix_answers_version", "model_name", "model_version", "flag"),
)

# answers and flags per UTC day, model version, verdict and predicted class: what users sent, kept after the answers
# themselves are pruned (a day holds at most versions x 3 verdicts x classes rows)
daily = Table(
    "daily", metadata,
    Column("day", Date, primary_key=True),
    Column("model_name", String(128), primary_key=True),
    Column("model_version", String(64), primary_key=True),
    Column("verdict", String(16), primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("answers", Integer, nullable=False),
    Column("flags", Integer, nullable=False),               # of those answers, how many users flagged
)
