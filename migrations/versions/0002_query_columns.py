"""C-FIND: case-folded person name columns, and an index for counting current instances per series.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:12:40.118204
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def _fold(value: str | None) -> str | None:
    # Frozen copy of storage.matching.fold_person_name as of this revision.
    if value is None:
        return None
    return value.strip().casefold() or None


def _backfill(table: str, source: str, target: str) -> None:
    """Fill the folded column of existing rows in Python: SQL lower() differs between databases."""
    rows = sa.table(table, sa.column('id', sa.BigInteger()), sa.column(source, sa.String()),
                    sa.column(target, sa.String()))
    bind = op.get_bind()
    after = 0
    while True:
        batch = bind.execute(
            sa.select(rows.c.id, rows.c[source]).where(rows.c.id > after, rows.c[source].is_not(None))
            .order_by(rows.c.id).limit(_BATCH)
        ).all()
        for row_id, value in batch:
            bind.execute(sa.update(rows).where(rows.c.id == row_id).values({target: _fold(value)}))
        if len(batch) < _BATCH:
            return
        after = batch[-1][0]


def upgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_name_folded', sa.String(), nullable=True))
        batch_op.create_index(batch_op.f('ix_patients_patient_name_folded'), ['patient_name_folded'], unique=False)
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('referring_physician_name_folded', sa.String(), nullable=True))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_series_pk_is_current'), ['series_pk', 'is_current'], unique=False)
    _backfill('patients', 'patient_name', 'patient_name_folded')
    _backfill('studies', 'referring_physician_name', 'referring_physician_name_folded')


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_series_pk_is_current'))
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('referring_physician_name_folded')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_patient_name_folded'))
        batch_op.drop_column('patient_name_folded')
