"""Workflow runs: the agent() call journal, the log, and the pending-tick flag.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('tick_pending', sa.Boolean(), server_default='false', nullable=False))
    op.create_table(
        'workflow_calls',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.UUID(), nullable=False),
        sa.Column('call_key', sa.String(length=64), nullable=False),
        sa.Column('child_run_id', sa.UUID(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('label', sa.Text(), nullable=True),
        sa.Column('phase', sa.Text(), nullable=True),
        sa.Column('prompt', sa.Text(), nullable=False),
        sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('value', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('model', sa.Text(), nullable=True),
        sa.Column('tokens', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('cost', sa.Float(), server_default='0', nullable=False),
        sa.Column('pass_number', sa.Integer(), nullable=False),
        sa.Column('served_pass', sa.Integer(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed', 'cancelled', 'refused')",
                           name='ck_workflow_calls_status'),
        sa.ForeignKeyConstraint(['child_run_id'], ['runs.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'call_key', name='uq_workflow_calls_run_key'),
    )
    op.create_index(op.f('ix_workflow_calls_child_run_id'), 'workflow_calls', ['child_run_id'], unique=False)
    op.create_table(
        'workflow_logs',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.UUID(), nullable=False),
        sa.Column('log_key', sa.String(length=64), nullable=False),
        sa.Column('level', sa.String(length=16), nullable=False),
        sa.Column('phase', sa.Text(), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'log_key', name='uq_workflow_logs_run_key'),
    )


def downgrade() -> None:
    op.drop_table('workflow_logs')
    op.drop_index(op.f('ix_workflow_calls_child_run_id'), table_name='workflow_calls')
    op.drop_table('workflow_calls')
    op.drop_column('runs', 'tick_pending')
