"""When each person last signed in, kept on their account

Revision ID: 0011
Revises: 0010

/admin's "Last active" read the newest live browser session; signing out, a password change or
the expiry sweep deletes sessions, so a person who had signed in showed "never". The time is now
written on the account at every sign-in. Existing accounts start from their live sessions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("users", sa.Column("last_sign_in_at", Time, nullable=True))
    op.execute(
        "UPDATE users SET last_sign_in_at = "
        "(SELECT MAX(created_at) FROM browser_sessions WHERE browser_sessions.user_id = users.id)"
    )


def downgrade() -> None:
    op.drop_column("users", "last_sign_in_at")
