"""Liveness: re-dispatch with back-off, and the poison-run guard.

`dispatches` counts the sweep's re-enqueues since the run was last enqueued normally, so an
unclaimed run is re-enqueued after lease x 2^dispatches (capped at requeue-after) instead of once
per requeue-after. `crashes` counts takeovers of an expired lease with no step finished in between
(`progress_mark` is the finished-step count at the last takeover); `crash_log` keeps who held the
lease each time, the evidence a `worker_crashed` failure reports.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('dispatches', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('runs', sa.Column('crashes', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('runs', sa.Column('progress_mark', sa.Integer(), nullable=True))
    op.add_column('runs', sa.Column('crash_log', postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column('runs', 'crash_log')
    op.drop_column('runs', 'progress_mark')
    op.drop_column('runs', 'crashes')
    op.drop_column('runs', 'dispatches')
