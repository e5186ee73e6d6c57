"""Remember the redirect URI a person approved with their consent

Revision ID: 0006
Revises: 0005

A remembered consent was honoured for any of the client's redirect URIs, and for a loopback
one on any port: any local program could take a person's tokens without a page being shown
(RFC 8252 §8.6, RFC 9700 §4.1; issue 12, finding 2). It now applies only to the exact URI
approved. Consents from before this revision have none, so each is asked once more.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("redirect_uri", sa.String(2048)))


def downgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("redirect_uri")
