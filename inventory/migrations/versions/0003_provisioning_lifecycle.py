"""provisioning lifecycle: node locks and state times, transitions, provisioning attempts, daemon instances

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lock_owner', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pool', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_node_lock_owner'), ['lock_owner'], unique=False)

    op.create_table('nodetransition',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_nodetransition_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nodetransition'))
    )
    with op.batch_alter_table('nodetransition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nodetransition_node_id'), ['node_id'], unique=False)

    op.create_table('provisioning',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('profile', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('mac', sqlmodel.sql.sqltypes.AutoString(length=17), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('script_served_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('callback_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host_address', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('ssh_host_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_provisioning_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provisioning')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_provisioning_token_sha256'))
    )
    with op.batch_alter_table('provisioning', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provisioning_node_id'), ['node_id'], unique=False)

    op.create_table('daemoninstance',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_daemoninstance'))
    )


def downgrade() -> None:
    op.drop_table('daemoninstance')
    with op.batch_alter_table('provisioning', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provisioning_node_id'))
    op.drop_table('provisioning')
    with op.batch_alter_table('nodetransition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodetransition_node_id'))
    op.drop_table('nodetransition')
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_lock_owner'))
        batch_op.drop_column('pool')
        batch_op.drop_column('locked_at')
        batch_op.drop_column('lock_owner')
        batch_op.drop_column('state_since')
