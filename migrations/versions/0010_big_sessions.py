"""Big sessions: indexes that keep opening a session bounded by the page size, not the session size.

- `ix_messages_session_seq_run` (session_id, seq) INCLUDE (run_id) replaces `ix_messages_session_seq`:
  a page of the conversation is a keyset scan by seq that also leaves out child runs' messages
  (a workflow's agents) from the index alone, and "how many messages come before this page" is an
  index-only count.
- `ix_runs_session_chat` (session_id, created_at, id) WHERE kind = 'agent' AND parent_id IS NULL: the
  session list's activity badge reads one row per session (its latest chat run) instead of ranking
  every run of every listed session.
- `ix_runs_session_children` (session_id, id) WHERE parent_id IS NOT NULL: the set of child runs the
  conversation leaves out, read without visiting the session's own (chat) runs.

Plain CREATE INDEX (Alembic runs each revision in a transaction, which CONCURRENTLY cannot join): it
blocks writes to these tables while it builds, seconds on a server of a few million messages.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_messages_session_seq_run', 'messages', ['session_id', 'seq'], unique=False,
                    postgresql_include=['run_id'])
    op.drop_index('ix_messages_session_seq', table_name='messages')
    op.create_index('ix_runs_session_chat', 'runs', ['session_id', 'created_at', 'id'], unique=False,
                    postgresql_where="kind = 'agent' AND parent_id IS NULL")
    op.create_index('ix_runs_session_children', 'runs', ['session_id', 'id'], unique=False,
                    postgresql_where="parent_id IS NOT NULL")


def downgrade() -> None:
    op.drop_index('ix_runs_session_children', table_name='runs', postgresql_where="parent_id IS NOT NULL")
    op.drop_index('ix_runs_session_chat', table_name='runs', postgresql_where="kind = 'agent' AND parent_id IS NULL")
    op.create_index('ix_messages_session_seq', 'messages', ['session_id', 'seq'], unique=False)
    op.drop_index('ix_messages_session_seq_run', table_name='messages')
