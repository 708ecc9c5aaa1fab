"""Queued workflow calls: a fan-out's agents beyond its concurrency wait as rows, not in a replay.

- `workflow_calls.status` may be `queued`: an `agent()` call the script made that has no free slot
  yet. A tick that only has queued calls to start takes them in order without replaying the script.
- `runs.replayed_at`: when a workflow's script was last replayed, so such ticks still replay at
  least every few seconds (the script sees its results and logs its progress); `runs.replays`
  counts the replays (against `claims`, the ticks).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint('ck_workflow_calls_status', 'workflow_calls', type_='check')
    op.create_check_constraint('ck_workflow_calls_status', 'workflow_calls',
                               "status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'refused')")
    op.add_column('runs', sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('runs', sa.Column('replays', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    op.drop_column('runs', 'replays')
    op.drop_column('runs', 'replayed_at')
    op.execute("DELETE FROM workflow_calls WHERE status = 'queued'")
    op.drop_constraint('ck_workflow_calls_status', 'workflow_calls', type_='check')
    op.create_check_constraint('ck_workflow_calls_status', 'workflow_calls',
                               "status IN ('running', 'completed', 'failed', 'cancelled', 'refused')")
