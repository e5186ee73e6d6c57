"""Remember whether the client sent redirect_uri with its authorization request

Revision ID: 0005
Revises: 0004

RFC 6749 §4.1.3 requires redirect_uri at the token endpoint only when the authorization
request carried it. A client with one registered redirect URI may leave it out of both; the
code used to record the URI it would go to without saying whether it had been sent, so the
token endpoint demanded it and such a client could never redeem its code. Rows from before
this revision count as sent (the old, stricter behaviour) until they expire minutes later.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("authorization_requests", "authorization_codes")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("redirect_uri_given", sa.Boolean, nullable=False, server_default=sa.true()))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("redirect_uri_given")
