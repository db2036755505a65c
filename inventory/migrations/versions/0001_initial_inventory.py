"""initial inventory

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 16:46:47.262910
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event'))
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_event_time'), ['time'], unique=False)

    op.create_table('reading',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('metric', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reading'))
    )
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.create_index('ix_reading_metric_time', ['metric', 'time'], unique=False)
        batch_op.create_index(batch_op.f('ix_reading_time'), ['time'], unique=False)

    op.create_table('site',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('country_code', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
    sa.Column('jurisdiction', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_site')),
    sa.UniqueConstraint('name', name=op.f('uq_site_name'))
    )
    op.create_table('discoveryrange',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('cidr', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('protocols', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_discoveryrange_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_discoveryrange')),
    sa.UniqueConstraint('site_id', 'cidr', name=op.f('uq_discoveryrange_site_id_cidr'))
    )
    with op.batch_alter_table('discoveryrange', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_discoveryrange_site_id'), ['site_id'], unique=False)

    op.create_table('location',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_location_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_location')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_location_site_id_name'))
    )
    with op.batch_alter_table('location', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_location_site_id'), ['site_id'], unique=False)

    op.create_table('coolingunit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('location_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('protocol', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('credential_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['location_id'], ['location.id'], name=op.f('fk_coolingunit_location_id_location')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_coolingunit_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coolingunit')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_coolingunit_site_id_name'))
    )
    with op.batch_alter_table('coolingunit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coolingunit_site_id'), ['site_id'], unique=False)

    op.create_table('powerpanel',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('location_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['location_id'], ['location.id'], name=op.f('fk_powerpanel_location_id_location')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_powerpanel_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_powerpanel')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_powerpanel_site_id_name'))
    )
    with op.batch_alter_table('powerpanel', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_powerpanel_site_id'), ['site_id'], unique=False)

    op.create_table('coolingloop',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('cooling_unit_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('supply_temperature_max_c', sa.Float(), nullable=True),
    sa.Column('flow_min_lpm', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['cooling_unit_id'], ['coolingunit.id'], name=op.f('fk_coolingloop_cooling_unit_id_coolingunit')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_coolingloop_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coolingloop')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_coolingloop_site_id_name'))
    )
    with op.batch_alter_table('coolingloop', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coolingloop_cooling_unit_id'), ['cooling_unit_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_coolingloop_site_id'), ['site_id'], unique=False)

    op.create_table('rack',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('location_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('u_height', sa.Integer(), nullable=False),
    sa.Column('power_budget_watts', sa.Float(), nullable=True),
    sa.Column('cooling_loop_id', sa.Integer(), nullable=True),
    sa.Column('switch_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['cooling_loop_id'], ['coolingloop.id'], name=op.f('fk_rack_cooling_loop_id_coolingloop')),
    sa.ForeignKeyConstraint(['location_id'], ['location.id'], name=op.f('fk_rack_location_id_location')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_rack_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rack')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_rack_site_id_name'))
    )
    with op.batch_alter_table('rack', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rack_cooling_loop_id'), ['cooling_loop_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rack_location_id'), ['location_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rack_site_id'), ['site_id'], unique=False)

    op.create_table('node',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('rack_id', sa.Integer(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('u_height', sa.Integer(), nullable=False),
    sa.Column('face', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('asset_tag', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('manufacturer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('bmc_address', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('bmc_port', sa.Integer(), nullable=True),
    sa.Column('bmc_protocol', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('bmc_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('bmc_tls_fingerprint', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('credential_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('power_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('bios_version', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('bmc_firmware', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('expected_power_watts', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rack_id'], ['rack.id'], name=op.f('fk_node_rack_id_rack')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_node_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node')),
    sa.UniqueConstraint('asset_tag', name=op.f('uq_node_asset_tag')),
    sa.UniqueConstraint('name', name=op.f('uq_node_name')),
    sa.UniqueConstraint('serial', name=op.f('uq_node_serial')),
    sa.UniqueConstraint('site_id', 'bmc_address', name=op.f('uq_node_site_id_bmc_address')),
    sa.UniqueConstraint('uuid', name=op.f('uq_node_uuid'))
    )
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_rack_id'), ['rack_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_state'), ['state'], unique=False)

    op.create_table('powerfeed',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('power_panel_id', sa.Integer(), nullable=False),
    sa.Column('rack_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('side', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('voltage', sa.Float(), nullable=False),
    sa.Column('amperage', sa.Float(), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('max_utilization', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['power_panel_id'], ['powerpanel.id'], name=op.f('fk_powerfeed_power_panel_id_powerpanel')),
    sa.ForeignKeyConstraint(['rack_id'], ['rack.id'], name=op.f('fk_powerfeed_rack_id_rack')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_powerfeed')),
    sa.UniqueConstraint('power_panel_id', 'name', name=op.f('uq_powerfeed_power_panel_id_name'))
    )
    with op.batch_alter_table('powerfeed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_powerfeed_power_panel_id'), ['power_panel_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_powerfeed_rack_id'), ['rack_id'], unique=False)

    op.create_table('drive',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('capacity_bytes', sa.BigInteger(), nullable=True),
    sa.Column('media_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_drive_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drive'))
    )
    with op.batch_alter_table('drive', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drive_node_id'), ['node_id'], unique=False)

    op.create_table('memorymodule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('slot', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('size_mib', sa.Integer(), nullable=True),
    sa.Column('part_number', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('manufacturer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('speed_mhz', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_memorymodule_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memorymodule'))
    )
    with op.batch_alter_table('memorymodule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memorymodule_node_id'), ['node_id'], unique=False)

    op.create_table('networkinterface',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('mac', sqlmodel.sql.sqltypes.AutoString(length=17), nullable=True),
    sa.Column('speed_mbps', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_networkinterface_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_networkinterface')),
    sa.UniqueConstraint('mac', name=op.f('uq_networkinterface_mac'))
    )
    with op.batch_alter_table('networkinterface', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_networkinterface_node_id'), ['node_id'], unique=False)

    op.create_table('pdu',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('rack_id', sa.Integer(), nullable=True),
    sa.Column('power_feed_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('protocol', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('credential_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('insecure_community_waiver', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['power_feed_id'], ['powerfeed.id'], name=op.f('fk_pdu_power_feed_id_powerfeed')),
    sa.ForeignKeyConstraint(['rack_id'], ['rack.id'], name=op.f('fk_pdu_rack_id_rack')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_pdu_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pdu')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_pdu_site_id_name'))
    )
    with op.batch_alter_table('pdu', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pdu_rack_id'), ['rack_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pdu_site_id'), ['site_id'], unique=False)

    op.create_table('processor',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('socket', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('manufacturer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('cores', sa.Integer(), nullable=True),
    sa.Column('threads', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_processor_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_processor'))
    )
    with op.batch_alter_table('processor', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processor_node_id'), ['node_id'], unique=False)

    op.create_table('rackslot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rack_id', sa.Integer(), nullable=False),
    sa.Column('u', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_rackslot_node_id_node')),
    sa.ForeignKeyConstraint(['rack_id'], ['rack.id'], name=op.f('fk_rackslot_rack_id_rack')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rackslot')),
    sa.UniqueConstraint('rack_id', 'u', name=op.f('uq_rackslot_rack_id_u'))
    )
    with op.batch_alter_table('rackslot', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rackslot_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rackslot_rack_id'), ['rack_id'], unique=False)

    op.create_table('pduoutlet',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pdu_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('power_feed_id', sa.Integer(), nullable=True),
    sa.Column('node_id', sa.Integer(), nullable=True),
    sa.Column('psu', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_pduoutlet_node_id_node')),
    sa.ForeignKeyConstraint(['pdu_id'], ['pdu.id'], name=op.f('fk_pduoutlet_pdu_id_pdu')),
    sa.ForeignKeyConstraint(['power_feed_id'], ['powerfeed.id'], name=op.f('fk_pduoutlet_power_feed_id_powerfeed')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pduoutlet')),
    sa.UniqueConstraint('pdu_id', 'index', name=op.f('uq_pduoutlet_pdu_id_index'))
    )
    with op.batch_alter_table('pduoutlet', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pduoutlet_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pduoutlet_pdu_id'), ['pdu_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pduoutlet', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pduoutlet_pdu_id'))
        batch_op.drop_index(batch_op.f('ix_pduoutlet_node_id'))

    op.drop_table('pduoutlet')
    with op.batch_alter_table('rackslot', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rackslot_rack_id'))
        batch_op.drop_index(batch_op.f('ix_rackslot_node_id'))

    op.drop_table('rackslot')
    with op.batch_alter_table('processor', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processor_node_id'))

    op.drop_table('processor')
    with op.batch_alter_table('pdu', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pdu_site_id'))
        batch_op.drop_index(batch_op.f('ix_pdu_rack_id'))

    op.drop_table('pdu')
    with op.batch_alter_table('networkinterface', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_networkinterface_node_id'))

    op.drop_table('networkinterface')
    with op.batch_alter_table('memorymodule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_memorymodule_node_id'))

    op.drop_table('memorymodule')
    with op.batch_alter_table('drive', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drive_node_id'))

    op.drop_table('drive')
    with op.batch_alter_table('powerfeed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_powerfeed_rack_id'))
        batch_op.drop_index(batch_op.f('ix_powerfeed_power_panel_id'))

    op.drop_table('powerfeed')
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_state'))
        batch_op.drop_index(batch_op.f('ix_node_site_id'))
        batch_op.drop_index(batch_op.f('ix_node_rack_id'))

    op.drop_table('node')
    with op.batch_alter_table('rack', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rack_site_id'))
        batch_op.drop_index(batch_op.f('ix_rack_location_id'))
        batch_op.drop_index(batch_op.f('ix_rack_cooling_loop_id'))

    op.drop_table('rack')
    with op.batch_alter_table('coolingloop', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coolingloop_site_id'))
        batch_op.drop_index(batch_op.f('ix_coolingloop_cooling_unit_id'))

    op.drop_table('coolingloop')
    with op.batch_alter_table('powerpanel', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_powerpanel_site_id'))

    op.drop_table('powerpanel')
    with op.batch_alter_table('coolingunit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coolingunit_site_id'))

    op.drop_table('coolingunit')
    with op.batch_alter_table('location', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_location_site_id'))

    op.drop_table('location')
    with op.batch_alter_table('discoveryrange', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_discoveryrange_site_id'))

    op.drop_table('discoveryrange')
    op.drop_table('site')
    with op.batch_alter_table('reading', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reading_time'))
        batch_op.drop_index('ix_reading_metric_time')

    op.drop_table('reading')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_time'))
        batch_op.drop_index(batch_op.f('ix_event_kind'))

    op.drop_table('event')
