"""Review: the operator's decision on each flagged or sampled answer, and the queue's index."""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    with op.batch_alter_table("answers") as table:
        table.add_column(sa.Column("review", sa.String(16)))
        table.add_column(sa.Column("review_label", sa.String(64)))
        table.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True)))
    op.create_index("ix_answers_queue", "answers", ["review", "confidence"])


def downgrade():
    op.drop_index("ix_answers_queue", "answers")
    with op.batch_alter_table("answers") as table:
        table.drop_column("reviewed_at")
        table.drop_column("review_label")
        table.drop_column("review")
