"""alerts, silences and the webhook outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('summary', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('active_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('flips', sa.JSON(), nullable=False),
    sa.Column('flapping', sa.Boolean(), nullable=False),
    sa.Column('notified_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acked_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_alert_fingerprint'))
    )
    op.create_index(op.f('ix_alert_rule'), 'alert', ['rule'], unique=False)
    op.create_index(op.f('ix_alert_state'), 'alert', ['state'], unique=False)

    op.create_table('silence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('matchers', sa.JSON(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('expired_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silence'))
    )
    op.create_index(op.f('ix_silence_ends_at'), 'silence', ['ends_at'], unique=False)

    op.create_table('notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('group_key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('webhook_id', name=op.f('uq_notification_webhook_id'))
    )
    op.create_index(op.f('ix_notification_state'), 'notification', ['state'], unique=False)
    op.create_index(op.f('ix_notification_target'), 'notification', ['target'], unique=False)

    op.create_table('outboxentry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('group_key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('snapshot', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notification_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alert.id'], name=op.f('fk_outboxentry_alert_id_alert')),
    sa.ForeignKeyConstraint(['notification_id'], ['notification.id'],
                            name=op.f('fk_outboxentry_notification_id_notification')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outboxentry'))
    )
    op.create_index(op.f('ix_outboxentry_alert_id'), 'outboxentry', ['alert_id'], unique=False)
    op.create_index(op.f('ix_outboxentry_due_at'), 'outboxentry', ['due_at'], unique=False)
    op.create_index(op.f('ix_outboxentry_notification_id'), 'outboxentry', ['notification_id'], unique=False)

    op.create_table('webhooktarget',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_webhooktarget'))
    )


def downgrade() -> None:
    op.drop_table('webhooktarget')
    op.drop_index(op.f('ix_outboxentry_notification_id'), table_name='outboxentry')
    op.drop_index(op.f('ix_outboxentry_due_at'), table_name='outboxentry')
    op.drop_index(op.f('ix_outboxentry_alert_id'), table_name='outboxentry')
    op.drop_table('outboxentry')
    op.drop_index(op.f('ix_notification_target'), table_name='notification')
    op.drop_index(op.f('ix_notification_state'), table_name='notification')
    op.drop_table('notification')
    op.drop_index(op.f('ix_silence_ends_at'), table_name='silence')
    op.drop_table('silence')
    op.drop_index(op.f('ix_alert_state'), table_name='alert')
    op.drop_index(op.f('ix_alert_rule'), table_name='alert')
    op.drop_table('alert')
