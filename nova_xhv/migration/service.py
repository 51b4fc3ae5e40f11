"""What one XHV compute runs for moves between hypervisor families.

``MoveService`` is built by XHVDriver around its backend.  It owns the
exchange endpoint (started in ``init_host``), the destination-side
``DestinationStager``, the source-side ``SourceMove`` and the journal of
unfinished moves, and implements each step XHVDriver's overrides name: move
out, finish, confirm, revert, reclaim, and the cleanup of leftovers at
start.
"""

import os
import threading

from nova import exception
from nova import objects
from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova_xhv.backends import family as backend_family
from nova_xhv import disk as xhv_disk
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import destination_side
from nova_xhv.migration import exchange
from nova_xhv.migration import hardware
from nova_xhv.migration import journal as move_journal
from nova_xhv.migration import ports
from nova_xhv.migration import source_side
from nova_xhv.migration import volumes as move_volumes

LOG = logging.getLogger(__name__)

SOURCE = 'source'
RECLAIMED = 'reclaimed'


class MoveService(object):
    """The one door from XHVDriver (nova_xhv/driver.py) into moves.

    Whether a move crosses families is decided once, on the source, by
    ``crosses_family`` (``source_side.crosses_families``); what follows reads
    that decision from the move's own records: the disk_info the source
    returns (``incoming_move``) and the source's journal
    (``source_record``).
    """

    def __init__(self, backend, conf):
        """Read ``conf`` (CONF.xhv) now.

        Computes of one test process share the global config.
        """
        self.backend = backend
        self.family = backend.family
        self._secret = conf.exchange_secret
        self._conf = {name: getattr(conf, name) for name in (
            'exchange_bind_host', 'exchange_port', 'exchange_advertise_host',
            'exchange_use_tls', 'exchange_cert_file', 'exchange_key_file',
            'exchange_ca_file', 'exchange_insecure', 'exchange_token_ttl',
            'exchange_clock_skew', 'exchange_header_timeout',
            'exchange_body_timeout', 'exchange_idle_timeout',
            'exchange_max_connections',
            'exchange_max_connections_per_client', 'migration_stage_timeout',
            'migration_poll_interval', 'migration_state_dir',
            'accepted_source_families', 'new_boot_families',
            'cross_family_disk_bus', 'cross_family_nic_model')}
        from nova_xhv.conf import translate as translate_conf
        self._convert_options = translate_conf.convert_options_from_conf(conf)
        self.host = None
        self.server = None
        self.stager = None
        self.journal = None
        self.client = None
        # The driver's policy enforcer; the stager re-checks moves with it.
        self.policy = None
        self._stopping = threading.Event()

    # -- service life ------------------------------------------------------

    @property
    def enabled(self):
        return bool(self._secret)

    def start(self, host):
        """Serve the exchange endpoint; remove leftovers of a crash."""
        self.host = host
        if not self.enabled:
            LOG.warning('[xhv] exchange_secret is not set: this compute '
                        'neither sends nor receives moves between '
                        'hypervisor families')
            return
        state_dir = os.path.join(self._conf['migration_state_dir'], host)
        self.journal = move_journal.Journal(state_dir)
        c = self._conf
        self.stager = destination_side.DestinationStager(
            self.backend, state_dir, self._convert_options,
            {'ca_file': c['exchange_ca_file'],
             'insecure': c['exchange_insecure']},
            accepted_families=c['accepted_source_families'],
            disk_bus_default=c['cross_family_disk_bus'],
            nic_model_default=c['cross_family_nic_model'],
            original_lookup=self.original_key_for, policy=self.policy)
        self.client = exchange_client.ExchangeClient(
            self._secret, ca_file=c['exchange_ca_file'],
            insecure=c['exchange_insecure'])
        self.server = exchange.ExchangeServer(
            self._secret, bind_host=c['exchange_bind_host'],
            port=c['exchange_port'],
            advertise_host=c['exchange_advertise_host'],
            use_tls=c['exchange_use_tls'],
            cert_file=c['exchange_cert_file'],
            key_file=c['exchange_key_file'],
            token_ttl=c['exchange_token_ttl'],
            clock_skew=c['exchange_clock_skew'],
            control_handler=self.stager,
            limits=exchange.Limits(
                header_timeout=c['exchange_header_timeout'],
                body_timeout=c['exchange_body_timeout'],
                idle_timeout=c['exchange_idle_timeout'],
                max_connections=c['exchange_max_connections'],
                max_connections_per_client=c[
                    'exchange_max_connections_per_client']))
        removed = self.stager.cleanup_leftovers()
        if removed:
            LOG.info('Removed disks staged by %d unfinished move(s): %s',
                     len(removed), ', '.join(removed))
        self.server.start()

    def stop(self):
        self._stopping.set()
        if self.server is not None:
            self.server.stop()

    # -- what the scheduler sees --------------------------------------------

    def accepted_families(self):
        accepted = [f.strip().lower()
                    for f in self._conf['accepted_source_families']
                    if f.strip()]
        return [f for f in sorted(backend_family.families())
                if f != self.family and (not accepted or f in accepted)]

    def advertise(self, resources):
        """Add what moves need to get_available_resource's answer."""
        stats = dict(resources.get('stats') or {})
        stats[source_side.STAT_FAMILY] = self.family
        if self.server is not None and self.server.url:
            stats[source_side.STAT_URL] = self.server.url
            accepts = self.accepted_families()
            stats[source_side.STAT_ACCEPTS] = ','.join(accepts)
            if self._conf['new_boot_families']:
                stats['xhv_new_boot'] = ','.join(
                    self._conf['new_boot_families'])
            arches = {t[0] for t in resources.get('supported_instances')
                      or []} or {'x86_64'}
            extra = [(arch, hv_type, 'hvm') for arch in sorted(arches)
                     for family in accepts
                     for hv_type in
                     backend_family.get(family).image_hv_types]
            known = [tuple(t) for t in resources.get('supported_instances')
                     or []]
            resources['supported_instances'] = known + [
                t for t in extra if t not in known]
        resources['stats'] = stats
        return resources

    def capabilities(self, backend_capabilities):
        if not self.enabled:
            return backend_capabilities  # no moves: exactly the backend
        caps = dict(backend_capabilities)
        # Nova turns these into COMPUTE_IMAGE_TYPE_* traits.
        for fmt in self.backend.facts.spawn_formats:
            caps['supports_image_type_%s' % fmt] = True
        return caps

    # -- source ------------------------------------------------------------

    @staticmethod
    def destination_of(context, instance):
        """Where a move of ``instance`` goes (source_side.destination_of)."""
        return source_side.destination_of(context, instance)

    def crosses_family(self, destination):
        return source_side.crosses_families(self.family, destination.family)

    @staticmethod
    def incoming_move(disk_info):
        """The record of a move between families in ``disk_info``.

        None for a same-family move: the backend's own business.
        """
        return source_side.cross_family_disk_info(disk_info)

    @staticmethod
    def is_moved_copy(instance):
        """Is ``instance`` here a copy made by a move between families?"""
        return hardware.SYSMETA_ORIGINAL in instance.system_metadata

    def _require_enabled(self):
        if not self.enabled or self.server is None:
            raise source_side.MoveFailed(
                '[xhv] exchange_secret is not set on this compute: it cannot '
                'move servers to another hypervisor family')

    def move_out(self, context, instance, destination, network_info,
                 block_device_info, timeout, retry_interval):
        self._require_enabled()
        # Before anything is powered off (nova_xhv/migration/ports.py).
        ports.check_destination_binds(context, instance, destination.host,
                                      destination.family)
        reclaim = self._reclaimable_on(destination, instance)
        if reclaim:
            return self._hand_back(context, instance, destination, reclaim,
                                   timeout, retry_interval)
        move = source_side.SourceMove(
            self.backend, self.host, self.server, self.client, self.journal,
            self._conf['migration_stage_timeout'],
            self._conf['migration_poll_interval'], self._stopping)
        return move.run(context, instance, destination, network_info,
                        block_device_info, timeout, retry_interval)

    def source_record(self, migration):
        if self.journal is None:
            return None
        record = self.journal.read(
            source_side.source_record_key(migration.uuid))
        return record if record and record.get('role') == SOURCE else None

    def confirm(self, context, migration, instance, network_info):
        """Delete the original VM and whatever the export left."""
        record = self.source_record(migration)
        self._release_recorded(context, instance, record)
        try:
            self.backend.destroy(context, instance, network_info,
                                 destroy_disks=True)
        except exception.InstanceNotFound:
            pass  # a reclaimed or already removed original
        self._discard_local_stage_leftovers(instance)
        self.journal.remove(source_side.source_record_key(migration.uuid))
        hardware.forget_original(instance.system_metadata)
        instance.save()

    def revert(self, context, instance, migration, network_info,
               block_device_info, power_on):
        """Bring the untouched original back (revert, or crash recovery)."""
        record = self.source_record(migration)
        self._release_recorded(context, instance, record)
        if record and record.get('dest_url') and self.client:
            # After a crash mid-transfer the destination may still hold a
            # staged copy; after a normal revert this is a no-op.
            try:
                self.client.stage_discard(record['dest_url'],
                                          migration.uuid)
            except exchange_client.ExchangeError as error:
                LOG.warning('Could not ask %s to discard move %s: %s',
                            record['dest_url'], migration.uuid, error)
        if hardware.restore_system_metadata(instance.system_metadata):
            instance.save()
        # Nova updated the attachments with this compute's connector: the
        # original gets its volumes back as they were.
        move_volumes.attach_again(self.backend, context, instance,
                                  move_volumes.mapped(block_device_info))
        if power_on:
            self.backend.power_on(context, instance, network_info,
                                  block_device_info)
        self.journal.remove(source_side.source_record_key(migration.uuid))

    def _release_recorded(self, context, instance, record):
        exported = [xhv_disk.DiskDescriptor.from_dict(d)
                    for d in (record or {}).get('exported') or []]
        if exported:
            try:
                self.backend.release_exported_disks(context, instance,
                                                    exported)
            except Exception:
                LOG.exception('Could not release exports of instance %s',
                              instance.uuid, instance=instance)

    def _discard_local_stage_leftovers(self, instance):
        """Disks staged here for a move whose finish failed (recovered)."""
        if self.stager is None:
            return
        for key in self.journal.find('destination', instance.uuid):
            self.stager.stage_discard(key)

    # -- destination -------------------------------------------------------

    def finish(self, context, instance, move, network_info,
               block_device_info, power_on):
        """Create the server from the staged disks with mapped hardware."""
        if move.get('reclaim'):
            return self._reclaim(context, instance, move, network_info,
                                 block_device_info, power_on)
        staged = [xhv_disk.DiskDescriptor.from_dict(d)
                  for d in move['disks']]
        classes = move['hardware']
        hardware.apply_to_system_metadata(instance.system_metadata,
                                          self.family, classes)
        instance.save()
        image_meta = objects.ImageMeta.from_instance(instance)
        # The choice travels in one channel: the system_metadata written
        # above, which image_meta (and every later hard reboot) reads.
        self.backend.spawn_from_disks(
            context, instance, staged, network_info, image_meta,
            block_device_info, power_on=power_on)
        if self.stager is not None:
            self.stager.consumed(move['key'])
        LOG.info('Instance %s now runs on %s with %s', instance.uuid,
                 self.family, ', '.join('%s %s' % kv for kv in sorted(
                     classes.items())), instance=instance)

    # -- recovery after a failed finish_migration ---------------------------

    def _reclaimable_on(self, destination, instance):
        """Does the destination still keep this server's original?"""
        try:
            return self.client.probe_original(destination.url, instance.uuid,
                                              self.family)
        except exchange_client.ExchangeError:
            return None

    def _hand_back(self, context, instance, destination, original_key,
                   timeout, retry_interval):
        """The original is intact on the destination: copy nothing."""
        try:
            self.backend.power_off(instance, timeout, retry_interval)
        except exception.InstanceNotFound:
            pass  # finish_migration failed before the guest existed
        # Whatever the failed finish left here goes at confirm.
        self.journal.write(
            source_side.source_record_key(destination.migration.uuid),
            {'role': SOURCE, 'instance_uuid': instance.uuid,
             'dest_url': destination.url, 'exported': [],
             'hand_back': True})
        LOG.info('Instance %s: its original on %s is intact; moving back '
                 'without copying data', instance.uuid, destination.host,
                 instance=instance)
        return jsonutils.dumps({source_side.DISK_INFO_MARK: 1, 'reclaim': True,
                                'key': destination.migration.uuid,
                                'original_key': original_key,
                                'source_family': self.family,
                                'dest_family': destination.family})

    def guard_destroy(self, instance):
        """Refuse to destroy an original reclaimed by a recovery move.

        Reverting that move would make Nova destroy the server's only
        copy on this host; confirming it is the way forward.
        """
        if self.journal is None:
            return
        keys = self.journal.find(RECLAIMED, instance.uuid)
        if not keys:
            return
        if instance.task_state == 'resize_reverting':
            raise exception.NovaException(
                'Instance %s runs on its reclaimed original here; reverting '
                'the recovery move would destroy it. Confirm the move '
                'instead (openstack server resize confirm).' % instance.uuid)
        for key in keys:
            self.journal.remove(key)

    def original_key_for(self, instance_uuid):
        if self.journal is None:
            return None
        keys = self.journal.find(SOURCE, instance_uuid)
        return keys[0] if keys else None

    def _reclaim(self, context, instance, move, network_info,
                 block_device_info, power_on):
        key = move['original_key']
        record = self.journal.read(key)
        if not record or record.get('instance_uuid') != instance.uuid:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        hardware.restore_system_metadata(instance.system_metadata)
        instance.save()
        move_volumes.attach_again(self.backend, context, instance,
                                  move_volumes.mapped(block_device_info))
        if power_on:
            self.backend.power_on(context, instance, network_info,
                                  block_device_info)
        self._release_recorded(context, instance, record)
        self.journal.remove(key)
        # A revert of this recovery move would destroy the original.
        self.journal.write(move['key'] + '.reclaimed', {
            'role': RECLAIMED, 'instance_uuid': instance.uuid})
        LOG.info('Instance %s: reclaimed its untouched original on %s',
                 instance.uuid, self.family, instance=instance)
