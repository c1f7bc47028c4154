"""Archive recompression: the per-instance work queue, its control row, and retired blobs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Instances stored before this revision have no row yet: the worker's first polls queue them
    # once their series are quiet, like any instance received later.
    op.create_table('archive_control',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('scanned_through', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_archive_control_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_archive_control'))
    )
    op.create_table('retired_blobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('blob_store', sa.String(), nullable=False),
    sa.Column('blob_key', sa.String(), nullable=False),
    sa.Column('delete_after', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retired_blobs')),
    sa.UniqueConstraint('blob_store', 'blob_key', name=op.f('uq_retired_blobs_blob_store_blob_key'))
    )
    op.create_index(op.f('ix_retired_blobs_delete_after'), 'retired_blobs', ['delete_after'], unique=False)
    op.create_table('archive_work',
    sa.Column('instance_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('codec_id', sa.String(length=32), nullable=True),
    sa.Column('codec_version', sa.Integer(), nullable=True),
    sa.Column('size_before', sa.BigInteger(), nullable=True),
    sa.Column('size_after', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'running', 'done', 'kept', 'skipped', 'failed')", name=op.f('ck_archive_work_state')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_archive_work_attempts_nonnegative')),
    sa.ForeignKeyConstraint(['instance_pk'], ['instances.id'], name=op.f('fk_archive_work_instance_pk_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_pk', name=op.f('pk_archive_work'))
    )
    op.create_index(op.f('ix_archive_work_state'), 'archive_work', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_archive_work_state'), table_name='archive_work')
    op.drop_table('archive_work')
    op.drop_index(op.f('ix_retired_blobs_delete_after'), table_name='retired_blobs')
    op.drop_table('retired_blobs')
    op.drop_table('archive_control')
