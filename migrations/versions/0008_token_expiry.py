"""Browser sessions expire on the server: an absolute end and an idle limit per token.

API tokens keep no limits. Browser sessions signed in before this revision get the default limits
(12 hours from sign-in, 2 hours idle), so a cookie stolen before the upgrade stops working too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('api_tokens', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_tokens', sa.Column('idle_seconds', sa.Integer(), nullable=True))
    op.execute("UPDATE api_tokens SET expires_at = created_at + interval '12 hours', idle_seconds = 7200 "
               "WHERE name = 'browser session' AND revoked_at IS NULL")


def downgrade() -> None:
    op.drop_column('api_tokens', 'idle_seconds')
    op.drop_column('api_tokens', 'expires_at')
