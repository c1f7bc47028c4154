"""Instances: the compression policy rule that matched and what it did.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 17:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows from before this revision stay NULL: no policy decided how they were stored.
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('policy_rule', sa.String(length=48), nullable=True))
        batch_op.add_column(sa.Column('policy_mode', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('policy_mode')
        batch_op.drop_column('policy_rule')
