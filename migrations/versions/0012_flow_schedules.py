"""Flow schedules under Celery beat: a schedule per (project, flow) turned on, and one row per firing.

- `flow_schedules`: the cursor (`last_fired_at`) a restarted beat resumes from, the cron and time
  zone last read from the definition (a changed cron starts from now, never firing its past).
- `flow_firings`: unique (schedule_id, fire_at), so two beat processes never start one firing twice;
  `outcome` is what the overlap policy decided (started, skipped, buffered, refused).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'flow_schedules',
        sa.Column('id', sa.UUID(), nullable=False),
        sa.Column('project_id', sa.UUID(), nullable=False),
        sa.Column('flow_name', sa.String(length=200), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_by', sa.UUID(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('cron', sa.Text(), nullable=True),
        sa.Column('timezone', sa.Text(), nullable=True),
        sa.Column('last_fired_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_fire_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('missed', sa.Integer(), server_default='0', nullable=False),
        sa.Column('last_beat_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'flow_name', name='uq_flow_schedules_project_flow'),
    )
    op.create_table(
        'flow_firings',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('schedule_id', sa.UUID(), nullable=False),
        sa.Column('fire_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('run_id', sa.UUID(), nullable=True),
        sa.Column('cancelled', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("outcome IN ('started', 'skipped', 'buffered', 'refused')", name='ck_flow_firings_outcome'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['schedule_id'], ['flow_schedules.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('schedule_id', 'fire_at', name='uq_flow_firings_schedule_fire_at'),
    )
    op.create_index(op.f('ix_flow_firings_run_id'), 'flow_firings', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_flow_firings_run_id'), table_name='flow_firings')
    op.drop_table('flow_firings')
    op.drop_table('flow_schedules')
