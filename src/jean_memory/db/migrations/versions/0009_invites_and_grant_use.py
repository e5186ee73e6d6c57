"""One-time sign-up links (the first-run setup link and invites), and when each grant was last used

Revision ID: 0009
Revises: 0008

`invites` holds both kinds of one-time link by the SHA-256 of their token: `kind` "setup" (the
first-run link `serve` prints while no account exists; it makes an administrator) or "invite"
(made by an administrator on /admin or `user invite`; optionally for one email). `used_at` makes
each single use. `grants.last_used_at` feeds the "last used" column of /apps (written at most
once a minute per grant, so it costs no write per request).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("used_at", Time, nullable=True),
        sa.Column("used_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_invites")),
    )
    op.add_column("grants", sa.Column("last_used_at", Time, nullable=True))


def downgrade() -> None:
    op.drop_column("grants", "last_used_at")
    op.drop_table("invites")
