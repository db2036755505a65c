"""telemetry series and rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:55:55.155545
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _series(labels: dict) -> str:
    """inventory.telemetry.series as of this revision."""
    def quote(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return ",".join(f'{key}="{quote(value)}"' for key, value in sorted(labels.items()))


def upgrade() -> None:
    op.create_table('readingrollup',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('metric', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
    sa.Column('series', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('min_value', sa.Float(), nullable=False),
    sa.Column('avg_value', sa.Float(), nullable=False),
    sa.Column('max_value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_readingrollup')),
    sa.UniqueConstraint('metric', 'series', 'bucket', name=op.f('uq_readingrollup_metric_series_bucket'))
    )
    with op.batch_alter_table('readingrollup', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_readingrollup_bucket'), ['bucket'], unique=False)

    # Added nullable, filled in from the labels of the readings already stored, then made NOT NULL.
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    reading = sa.table('reading', sa.column('id', sa.Integer()), sa.column('labels', sa.JSON()),
                       sa.column('series', sa.String()))
    bind = op.get_bind()
    rows = [{"row_id": id_, "series": _series(labels)}
            for id_, labels in bind.execute(sa.select(reading.c.id, reading.c.labels))]
    if rows:
        bind.execute(reading.update().where(reading.c.id == sa.bindparam("row_id"))
                     .values(series=sa.bindparam("series")), rows)
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.alter_column('series', existing_type=sqlmodel.sql.sqltypes.AutoString(), nullable=False)
        batch_op.create_index('ix_reading_metric_series_time', ['metric', 'series', 'time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.drop_index('ix_reading_metric_series_time')
        batch_op.drop_column('series')

    with op.batch_alter_table('readingrollup', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_readingrollup_bucket'))

    op.drop_table('readingrollup')
