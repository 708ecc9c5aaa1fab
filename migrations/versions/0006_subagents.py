"""Background subagents: slot admission and result delivery.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('admitted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('runs', sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_runs_open_subagents', 'runs', ['created_by', 'created_at'], unique=False,
                    postgresql_where=sa.text("kind = 'subagent' AND status IN ('queued', 'running', 'waiting')"))


def downgrade() -> None:
    op.drop_index('ix_runs_open_subagents', table_name='runs',
                  postgresql_where=sa.text("kind = 'subagent' AND status IN ('queued', 'running', 'waiting')"))
    op.drop_column('runs', 'delivered_at')
    op.drop_column('runs', 'admitted_at')
