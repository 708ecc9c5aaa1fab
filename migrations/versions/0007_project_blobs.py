"""Blobs belong to projects: an image part may reference only blobs uploaded to its own project.

Existing attachments are linked to the project whose message referenced them first (the uploader's,
since a blob is uploaded before the message that shows it); a later reference from another project
is exactly what this revision stops, so it is not carried over.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('project_blobs',
    sa.Column('project_id', sa.UUID(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sha256'], ['blobs.sha256'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'sha256')
    )
    op.execute("""
        INSERT INTO project_blobs (project_id, sha256)
        SELECT DISTINCT ON (part->>'blob') s.project_id, part->>'blob'
        FROM messages m
        JOIN sessions s ON s.id = m.session_id
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(m.parts) = 'array' THEN m.parts ELSE '[]'::jsonb END) AS part
        WHERE part->>'type' = 'image' AND EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = part->>'blob')
        ORDER BY part->>'blob', m.created_at, m.seq
    """)


def downgrade() -> None:
    op.drop_table('project_blobs')
