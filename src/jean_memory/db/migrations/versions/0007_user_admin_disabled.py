"""Accounts can be administrators and can be disabled

Revision ID: 0007
Revises: 0006

`is_admin` marks an administrator (`jean-memory user add EMAIL --admin`; the admin pages use
it). `disabled_at` is set while an account is disabled (`jean-memory user disable`): sign-in
and its API keys are refused, and its grants were revoked when it was set. Existing accounts
are ordinary and enabled.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("disabled_at", sa.Float(precision=53)))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("is_admin")
