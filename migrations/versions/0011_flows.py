"""Flow runs: a row per step of a flow run (state, attempt, child run, timing, result) and per-flow
trigger tokens.

- `flow_steps`: unique (run_id, step_id); `attempt` only grows within a run and fences late results.
- `flow_triggers`: a token (SHA-256 only) that starts one flow of one project over
  `POST /api/flows/{id}/trigger`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A deferred run that must look again at a set time (a flow step's timeout or retry back-off);
    # the recovery sweep enqueues it then (orchestrator/recovery.py).
    op.add_column('runs', sa.Column('wake_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_runs_wake_at', 'runs', ['wake_at'], postgresql_where=sa.text('wake_at IS NOT NULL'))
    op.create_table(
        'flow_steps',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.UUID(), nullable=False),
        sa.Column('step_id', sa.String(length=200), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('first_attempt', sa.Integer(), nullable=False),
        sa.Column('child_run_id', sa.UUID(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('timed_out_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('tokens', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('cost', sa.Float(), server_default='0', nullable=False),
        sa.Column('model', sa.Text(), nullable=True),
        sa.Column('history', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'running', 'completed', 'failed', 'timed_out', 'skipped', "
                           "'excluded', 'upstream_failed', 'cancelled')", name='ck_flow_steps_state'),
        sa.ForeignKeyConstraint(['child_run_id'], ['runs.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'step_id', name='uq_flow_steps_run_step'),
    )
    op.create_index(op.f('ix_flow_steps_child_run_id'), 'flow_steps', ['child_run_id'], unique=False)
    op.create_table(
        'flow_triggers',
        sa.Column('id', sa.UUID(), nullable=False),
        sa.Column('project_id', sa.UUID(), nullable=False),
        sa.Column('flow_name', sa.String(length=200), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_by', sa.UUID(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_index(op.f('ix_flow_triggers_project_id'), 'flow_triggers', ['project_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_flow_triggers_project_id'), table_name='flow_triggers')
    op.drop_table('flow_triggers')
    op.drop_index(op.f('ix_flow_steps_child_run_id'), table_name='flow_steps')
    op.drop_table('flow_steps')
    op.drop_index('ix_runs_wake_at', table_name='runs')
    op.drop_column('runs', 'wake_at')
