"""Instances: the source UID and the figures of ROI-hybrid (derived) instances.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 18:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every instance stored before ROI-hybrid coding existed was stored losslessly: all NULL.
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_sop_instance_uid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('roi_fraction', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('roi_max_error', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('roi_psnr_db', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('roi_psnr_outside_db', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('roi_ratio', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_source_sop_instance_uid'), ['source_sop_instance_uid'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_source_sop_instance_uid'))
        batch_op.drop_column('roi_ratio')
        batch_op.drop_column('roi_psnr_outside_db')
        batch_op.drop_column('roi_psnr_db')
        batch_op.drop_column('roi_max_error')
        batch_op.drop_column('roi_fraction')
        batch_op.drop_column('source_sop_instance_uid')
