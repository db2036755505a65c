"""series table: a reading refers to its series by id

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 22:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('metric', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('metric', 'key', name=op.f('uq_series_metric_key'))
    )
    bind = op.get_bind()
    reading = sa.table('reading', sa.column('id', sa.Integer()), sa.column('metric', sa.String()),
                       sa.column('series', sa.String()), sa.column('labels', sa.JSON()),
                       sa.column('series_id', sa.Integer()))
    series = sa.table('series', sa.column('id', sa.Integer()), sa.column('metric', sa.String()),
                      sa.column('key', sa.String()), sa.column('labels', sa.JSON()))
    # One series per (metric, series text) already stored, with the labels of its first reading.
    first = sa.select(sa.func.min(reading.c.id)).group_by(reading.c.metric, reading.c.series)
    rows = bind.execute(sa.select(reading.c.metric, reading.c.series, reading.c.labels)
                        .where(reading.c.id.in_(first))).all()
    if rows:
        bind.execute(series.insert(), [{"metric": m, "key": k, "labels": labels} for m, k, labels in rows])

    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series_id', sa.Integer(), nullable=True))
    bind.execute(reading.update().values(series_id=sa.select(series.c.id).where(
        series.c.metric == reading.c.metric, series.c.key == reading.c.series).scalar_subquery()))
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.drop_index('ix_reading_metric_series_time')
        batch_op.drop_index('ix_reading_metric_time')
        batch_op.drop_column('metric')
        batch_op.drop_column('labels')
        batch_op.drop_column('series')
        batch_op.alter_column('series_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(batch_op.f('fk_reading_series_id_series'), 'series', ['series_id'], ['id'])
        batch_op.create_index('ix_reading_series_id_time', ['series_id', 'time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metric', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=True))
        batch_op.add_column(sa.Column('labels', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('series', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    bind = op.get_bind()
    reading = sa.table('reading', sa.column('metric', sa.String()), sa.column('series', sa.String()),
                       sa.column('labels', sa.JSON()), sa.column('series_id', sa.Integer()))
    series = sa.table('series', sa.column('id', sa.Integer()), sa.column('metric', sa.String()),
                      sa.column('key', sa.String()), sa.column('labels', sa.JSON()))
    of_reading = series.c.id == reading.c.series_id
    bind.execute(reading.update().values(
        metric=sa.select(series.c.metric).where(of_reading).scalar_subquery(),
        series=sa.select(series.c.key).where(of_reading).scalar_subquery(),
        labels=sa.select(series.c.labels).where(of_reading).scalar_subquery()))
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.drop_index('ix_reading_series_id_time')
        batch_op.drop_constraint(batch_op.f('fk_reading_series_id_series'), type_='foreignkey')
        batch_op.drop_column('series_id')
        batch_op.alter_column('metric', existing_type=sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False)
        batch_op.alter_column('labels', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column('series', existing_type=sqlmodel.sql.sqltypes.AutoString(), nullable=False)
        batch_op.create_index('ix_reading_metric_time', ['metric', 'time'], unique=False)
        batch_op.create_index('ix_reading_metric_series_time', ['metric', 'series', 'time'], unique=False)
    op.drop_table('series')
