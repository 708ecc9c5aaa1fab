"""Approvals of dangerous tool calls, and each project's approval policy.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('approvals',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=False),
    sa.Column('step_key', sa.String(length=500), nullable=False),
    sa.Column('tool', sa.String(length=100), nullable=False),
    sa.Column('arguments', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('rule', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.UUID(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'denied')", name='ck_approvals_status'),
    sa.ForeignKeyConstraint(['decided_by'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'step_key', name='uq_approvals_run_step_key')
    )
    op.create_index('ix_approvals_session_status', 'approvals', ['session_id', 'status'], unique=False)
    op.add_column('projects', sa.Column('approval_policy', postgresql.JSONB(astext_type=sa.Text()), server_default='{}',
                                        nullable=False))


def downgrade() -> None:
    op.drop_column('projects', 'approval_policy')
    op.drop_index('ix_approvals_session_status', table_name='approvals')
    op.drop_table('approvals')
