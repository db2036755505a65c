"""switches

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('switch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('protocol', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('credential_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('insecure_community_waiver', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_switch_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_switch')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_switch_site_id_name'))
    )
    with op.batch_alter_table('switch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_switch_site_id'), ['site_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('switch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_switch_site_id'))

    op.drop_table('switch')
