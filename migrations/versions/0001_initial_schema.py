"""Initial schema: patients, studies, series, instance revisions, totals, database blob store.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 10:34:11.743574
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("length(sha256) = 64 AND ltrim(sha256, '0123456789abcdef') = ''", name=op.f('ck_blobs_sha256_hex')),
    sa.CheckConstraint('size >= 0', name=op.f('ck_blobs_size_nonnegative')),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_blobs'))
    )
    op.create_index(op.f('ix_blobs_created_at'), 'blobs', ['created_at'], unique=False)
    op.create_table('index_totals',
    sa.Column('stripe', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('instances', sa.BigInteger(), nullable=False),
    sa.Column('revisions', sa.BigInteger(), nullable=False),
    sa.Column('studies', sa.BigInteger(), nullable=False),
    sa.Column('series', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('original_bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('stripe', name=op.f('pk_index_totals'))
    )
    op.create_table('patients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patient_id', sa.String(), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(), nullable=False),
    sa.Column('patient_name', sa.String(), nullable=True),
    sa.Column('birth_date', sa.String(), nullable=True),
    sa.Column('sex', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('patient_id', 'issuer_of_patient_id', name=op.f('uq_patients_patient_id_issuer_of_patient_id'))
    )
    op.create_index(op.f('ix_patients_patient_name'), 'patients', ['patient_name'], unique=False)
    op.create_table('blob_chunks',
    sa.Column('blob_key', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['blob_key'], ['blobs.key'], name=op.f('fk_blob_chunks_blob_key_blobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blob_key', 'seq', name=op.f('pk_blob_chunks'))
    )
    op.create_table('studies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('study_instance_uid', sa.String(), nullable=False),
    sa.Column('patient_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('study_date', sa.String(), nullable=True),
    sa.Column('study_time', sa.String(), nullable=True),
    sa.Column('accession_number', sa.String(), nullable=True),
    sa.Column('study_id', sa.String(), nullable=True),
    sa.Column('study_description', sa.String(), nullable=True),
    sa.Column('referring_physician_name', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patients.id'], name=op.f('fk_studies_patient_pk_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_studies_study_instance_uid'))
    )
    op.create_index(op.f('ix_studies_accession_number'), 'studies', ['accession_number'], unique=False)
    op.create_index(op.f('ix_studies_patient_pk'), 'studies', ['patient_pk'], unique=False)
    op.create_index(op.f('ix_studies_study_date'), 'studies', ['study_date'], unique=False)
    op.create_table('series',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('series_instance_uid', sa.String(), nullable=False),
    sa.Column('study_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('modality', sa.String(), nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.String(), nullable=True),
    sa.Column('body_part_examined', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['study_pk'], ['studies.id'], name=op.f('fk_series_study_pk_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    op.create_index(op.f('ix_series_modality'), 'series', ['modality'], unique=False)
    op.create_index(op.f('ix_series_study_pk'), 'series', ['study_pk'], unique=False)
    op.create_table('instances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('series_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sop_instance_uid', sa.String(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('is_current', sa.Boolean(), nullable=False),
    sa.Column('sop_class_uid', sa.String(), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(), nullable=False),
    sa.Column('specific_character_set', sa.String(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('bits_allocated', sa.Integer(), nullable=True),
    sa.Column('bits_stored', sa.Integer(), nullable=True),
    sa.Column('photometric_interpretation', sa.String(), nullable=True),
    sa.Column('storage_mode', sa.String(length=32), nullable=False),
    sa.Column('codec_id', sa.String(), nullable=True),
    sa.Column('codec_version', sa.Integer(), nullable=True),
    sa.Column('original_size', sa.BigInteger(), nullable=False),
    sa.Column('stored_size', sa.BigInteger(), nullable=False),
    sa.Column('dataset_sha256', sa.String(length=64), nullable=False),
    sa.Column('pixel_sha256', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('calling_ae_title', sa.String(), nullable=False),
    sa.Column('blob_store', sa.String(), nullable=False),
    sa.Column('blob_key', sa.String(), nullable=False),
    sa.Column('blob_size', sa.BigInteger(), nullable=False),
    sa.Column('blob_sha256', sa.String(length=64), nullable=False),
    sa.CheckConstraint("length(blob_sha256) = 64 AND ltrim(blob_sha256, '0123456789abcdef') = ''", name=op.f('ck_instances_blob_sha256_hex')),
    sa.CheckConstraint("length(dataset_sha256) = 64 AND ltrim(dataset_sha256, '0123456789abcdef') = ''", name=op.f('ck_instances_dataset_sha256_hex')),
    sa.CheckConstraint("length(pixel_sha256) = 64 AND ltrim(pixel_sha256, '0123456789abcdef') = ''", name=op.f('ck_instances_pixel_sha256_hex')),
    sa.CheckConstraint('original_size >= 0 AND stored_size >= 0 AND blob_size >= 0', name=op.f('ck_instances_sizes')),
    sa.CheckConstraint('revision >= 1', name=op.f('ck_instances_revision_positive')),
    sa.CheckConstraint("storage_mode IN ('compressed', 'as-received', 'no-pixels')", name=op.f('ck_instances_storage_mode')),
    sa.ForeignKeyConstraint(['series_pk'], ['series.id'], name=op.f('fk_instances_series_pk_series')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('sop_instance_uid', 'revision', name=op.f('uq_instances_sop_instance_uid_revision'))
    )
    op.create_index(op.f('ix_instances_blob_store_blob_key'), 'instances', ['blob_store', 'blob_key'], unique=False)
    op.create_index(op.f('ix_instances_is_current'), 'instances', ['is_current'], unique=False)
    op.create_index(op.f('ix_instances_series_pk'), 'instances', ['series_pk'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_instances_series_pk'), table_name='instances')
    op.drop_index(op.f('ix_instances_is_current'), table_name='instances')
    op.drop_index(op.f('ix_instances_blob_store_blob_key'), table_name='instances')
    op.drop_table('instances')
    op.drop_index(op.f('ix_series_study_pk'), table_name='series')
    op.drop_index(op.f('ix_series_modality'), table_name='series')
    op.drop_table('series')
    op.drop_index(op.f('ix_studies_study_date'), table_name='studies')
    op.drop_index(op.f('ix_studies_patient_pk'), table_name='studies')
    op.drop_index(op.f('ix_studies_accession_number'), table_name='studies')
    op.drop_table('studies')
    op.drop_table('blob_chunks')
    op.drop_index(op.f('ix_patients_patient_name'), table_name='patients')
    op.drop_table('patients')
    op.drop_table('index_totals')
    op.drop_index(op.f('ix_blobs_created_at'), table_name='blobs')
    op.drop_table('blobs')
