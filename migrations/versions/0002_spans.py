"""Trace spans: run > turn > model call / tool call, with keyset position.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence('spans_position_seq')))
    op.create_table('spans',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('position', sa.BigInteger(), server_default=sa.text("nextval('spans_position_seq')"), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('parent_id', sa.UUID(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('turn', sa.Integer(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.CheckConstraint("kind IN ('run', 'turn', 'model_call', 'tool_call')", name='ck_spans_kind'),
    sa.CheckConstraint("status IN ('running', 'ok', 'error', 'interrupted', 'cancelled')", name='ck_spans_status'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('position')
    )
    op.create_index('ix_spans_run_position', 'spans', ['run_id', 'position'], unique=False)
    op.create_index('ix_spans_session_position', 'spans', ['session_id', 'position'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_spans_session_position', table_name='spans')
    op.drop_index('ix_spans_run_position', table_name='spans')
    op.drop_table('spans')
    op.execute(sa.schema.DropSequence(sa.Sequence('spans_position_seq')))
