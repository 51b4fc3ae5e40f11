"""Source side of a move between hypervisor families, and discovery.

How the source finds the destination: Nova hands the source only the
destination's address, but the instance's migration context names the
Migration, which names the destination host and node.  Every XHV compute
publishes its family and exchange URL in its compute node's ``stats``
(``get_available_resource``), which Nova persists in the database; so the
source reads ``ComputeNode(dest host, dest node).stats``.  This works with
a cloud-wide port in production and with per-compute ephemeral ports in
tests, and needs nothing outside Nova's own records.
"""

import dataclasses
import threading
import time
import typing

from nova.compute import utils as compute_utils
from nova import objects
from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova_xhv.backends import family as backend_family
from nova_xhv import disk as xhv_disk
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import hardware
from nova_xhv.migration import volumes as move_volumes

LOG = logging.getLogger(__name__)

STAT_FAMILY = 'xhv_family'
STAT_URL = 'xhv_exchange_url'
STAT_ACCEPTS = 'xhv_accepts'
DISK_INFO_MARK = 'xhv_cross_family'


class MoveFailed(Exception):
    """A step of a cross-family move failed; the move is rolled back."""

    def __init__(self, reason):
        super().__init__(reason)


def source_record_key(migration_uuid):
    """Journal key of the original a source keeps until confirm."""
    return migration_uuid + '.source'


# Seconds between two progress reports (log line, server progress field).
PROGRESS_EVERY = 1.0


def crosses_families(source_family, dest_family):
    """THE test of a move between hypervisor families.

    An unknown family (a compute that publishes none and reports no
    hypervisor type XHV knows) is not a move between families: the
    backend's own migration handles it, as without XHV.
    """
    return (source_family is not None and dest_family is not None
            and source_family != dest_family)


def family_of_hv_type(hv_type):
    """The family of a compute reporting Nova hypervisor_type ``hv_type``."""
    return backend_family.family_of_hv_type(hv_type)


def report_progress(instance, percent):
    """Show a move's progress as the server's ``progress`` (server show).

    Like Nova's own vmwareapi driver; a failed save only loses the figure,
    never the move.
    """
    percent = max(0, min(100, int(percent)))
    if instance.progress == percent:
        return
    instance.progress = percent
    try:
        instance.save()
    except Exception as error:
        LOG.warning('Could not record progress %d%% of instance %s: %s',
                    percent, instance.uuid, error, instance=instance)


@dataclasses.dataclass
class Destination:
    host: str
    node: str
    family: typing.Optional[str]
    url: typing.Optional[str]
    migration: typing.Any
    # {'digest', 'input'}: what the source's policy decided on, signed
    # into the stage request for the destination to re-check.
    policy: typing.Any = None


def destination_of(context, instance):
    """Where a move of ``instance`` goes (see module doc)."""
    migration_id = instance.migration_context.migration_id
    migration = objects.Migration.get_by_id_and_instance(
        context, migration_id, instance.uuid)
    node = objects.ComputeNode.get_by_host_and_nodename(
        context, migration.dest_compute, migration.dest_node)
    stats = node.stats or {}
    family = stats.get(STAT_FAMILY) or family_of_hv_type(node.hypervisor_type)
    return Destination(host=migration.dest_compute,
                       node=migration.dest_node, family=family,
                       url=stats.get(STAT_URL), migration=migration)


def cross_family_disk_info(disk_info):
    """The move record in ``disk_info``, or None for a same-family move."""
    if not disk_info:
        return None
    try:
        data = jsonutils.loads(disk_info)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get(DISK_INFO_MARK):
        return data
    return None


def source_hardware(backend, instance, disks):
    """The server's current hardware as neutral classes.

    The boot disk's bus and the NIC model are the source family's own
    names (classified with its facts); Nova's ``hw_firmware_type`` already
    speaks the neutral names (bios, uefi).
    """
    props = instance.image_meta.properties
    nic = props.get('hw_vif_model') if 'hw_vif_model' in props else None
    firmware = (props.get('hw_firmware_type')
                if 'hw_firmware_type' in props else None)
    classes = hardware.classify_all(backend.family, {
        hardware.DISK_BUS: disks[0].bus if disks else None,
        hardware.NIC_MODEL: nic})
    classes[hardware.FIRMWARE] = (firmware if firmware in
                                  hardware.FIRMWARE_CLASSES else None)
    return classes


class SourceMove(object):
    """One cross-family move, on the source compute."""

    def __init__(self, backend, host, server, client, journal, timeout,
                 poll_interval, stopping=None):
        self.backend = backend
        # Set when the compute service stops: roll back instead of
        # keeping the service waiting for the whole stage timeout.
        self.stopping = stopping or threading.Event()
        self.host = host
        self.server = server
        self.client = client
        self.journal = journal
        self.timeout = timeout
        self.poll_interval = poll_interval

    def run(self, context, instance, dest, network_info, block_device_info,
            power_off_timeout, retry_interval):
        """Power off, export, have the destination stage; return disk_info.

        On any failure the original is powered on again (if it ran), the
        destination discards what it staged, and MoveFailed is raised.
        """
        key = dest.migration.uuid
        record_key = source_record_key(key)
        was_running = instance.vm_state != 'stopped'
        published = []
        exported = []
        detached = []
        started = time.monotonic()
        timings = {}
        self.journal.write(record_key, {
            'role': 'source', 'instance_uuid': instance.uuid,
            'dest_url': dest.url, 'exported': []})
        try:
            if not dest.url:
                raise MoveFailed(
                    reason='destination %s publishes no XHV exchange '
                           'endpoint: is it an XHV compute with [xhv] '
                           'exchange_secret set?' % dest.host)
            # Refused while the server still runs, with the reason.
            move_volumes.check_can_follow(block_device_info, dest.family)
            move_volumes.check_destination_attaches(self.client, dest,
                                                    block_device_info)
            with self._event(context, 'xhv_power_off', instance):
                self.backend.power_off(instance, power_off_timeout,
                                       retry_interval)
            # The volumes follow through Nova's attachment flow: released
            # here, attached on the destination by finish_migration.
            with self._event(context, 'xhv_detach_volumes', instance):
                detached = move_volumes.detach_all(
                    self.backend, context, instance, block_device_info)
            step = time.monotonic()
            with self._event(context, 'xhv_export_disks', instance):
                exported = self.backend.export_disks(context, instance,
                                                     block_device_info)
            timings['export'] = time.monotonic() - step
            self.journal.write(record_key, {
                'role': 'source', 'instance_uuid': instance.uuid,
                'dest_url': dest.url,
                'exported': [d.to_dict() for d in exported]})
            request = self._stage_request(key, instance, exported, published)
            if dest.policy is not None:
                request['policy'] = dest.policy
            # All its disks are volumes (booted from one): nothing to pull,
            # the destination only chooses the hardware.
            request['volume_backed'] = not exported and bool(
                move_volumes.mapped(block_device_info))
            step = time.monotonic()
            with self._event(context, 'xhv_stage_disks', instance):
                report = self._stage_and_wait(dest, key, instance, request)
            timings['transfer_translate_upload'] = time.monotonic() - step
            timings.update({'dest_' + k: v for k, v in
                            (report.get('timings') or {}).items()})
        except Exception as error:
            LOG.error('Moving instance %s to %s (%s) failed: %s: %s; rolling '
                      'back', instance.uuid, dest.host, dest.family,
                      type(error).__name__, error, instance=instance)
            self.roll_back(context, instance, key, dest.url, published,
                           exported, network_info, block_device_info,
                           was_running, detached)
            if isinstance(error, MoveFailed):
                raise
            if isinstance(error, move_volumes.VolumeCannotFollow):
                raise MoveFailed(reason=str(error))
            raise MoveFailed(reason='%s: %s' % (type(error).__name__, error))
        finally:
            for disk_id in published:
                self.server.publisher.revoke(disk_id)
        # The destination holds its own copy now; exports are not needed.
        self._release(context, instance, exported)
        timings['total'] = time.monotonic() - started
        LOG.info('Instance %s staged on %s (%s) in %.1f s: %s',
                 instance.uuid, dest.host, dest.family, timings['total'],
                 ', '.join('%s %.1f s' % kv for kv in sorted(
                     timings.items())), instance=instance)
        return jsonutils.dumps({
            DISK_INFO_MARK: 1, 'key': key,
            'source_family': self.backend.family,
            'dest_family': dest.family, 'dest_url': dest.url,
            'hardware': report['hardware'], 'disks': report['staged'],
            'timings': timings})

    def _event(self, context, name, instance):
        # An instance action event per step: operators see where a move
        # spent its time, or which step failed (with its traceback).
        return compute_utils.EventReporter(context, name, self.host,
                                           instance.uuid, graceful_exit=True)

    def _stage_request(self, key, instance, exported, published):
        disks = []
        for disk in exported:
            reader = self.backend.open_exported_disk(disk)
            disk_id, token = self.server.publisher.publish(reader)
            published.append(disk_id)
            offer = xhv_disk.DiskDescriptor(
                format=disk.format, subformat=disk.subformat,
                virtual_size=disk.virtual_size,
                url=self.server.disk_url(disk_id), bus=disk.bus,
                boot_index=disk.boot_index, device_name=disk.device_name,
                handle=disk.handle)
            disks.append({'disk': offer.to_dict(), 'disk_id': disk_id,
                          'token': token})
        return {'key': key, 'instance_uuid': instance.uuid,
                'source_family': self.backend.family,
                'source_hardware': source_hardware(self.backend, instance,
                                                   exported),
                'disks': disks}

    def _stage_and_wait(self, dest, key, instance, request):
        report = self.client.stage_start(dest.url, request)
        deadline = time.monotonic() + self.timeout
        last = None
        last_shown = 0.0
        while report['state'] == 'running':
            if self.stopping.is_set():
                raise MoveFailed(reason='this compute service is stopping')
            if time.monotonic() > deadline:
                raise MoveFailed(
                    reason='the destination %s did not stage the disks '
                           'within %d s ([xhv] migration_stage_timeout)'
                           % (dest.host, self.timeout))
            progress = (report['stage'], report['percent'])
            # At most once a second: each report is a log line and an
            # instance save, however short the poll interval.
            if progress != last and \
                    time.monotonic() - last_shown >= PROGRESS_EVERY:
                LOG.info('Moving instance %s: %s, %d%%, %d bytes read',
                         instance.uuid, report['stage'], report['percent'],
                         report['bytes'], instance=instance)
                report_progress(instance, report['percent'])
                last = progress
                last_shown = time.monotonic()
            time.sleep(self.poll_interval)
            report = self.client.stage_status(dest.url, key)
        if report['state'] != 'done':
            raise MoveFailed(
                reason='the destination %s could not stage the disks: %s'
                       % (dest.host, report.get('error') or report['state']))
        report_progress(instance, 100)
        return report

    def roll_back(self, context, instance, key, dest_url, published,
                  exported, network_info, block_device_info, power_on,
                  detached=()):
        """Undo a move that has not reached finish_migration. Never raises.

        The original's disks were only read, never changed.
        """
        for disk_id in published:
            self.server.publisher.revoke(disk_id)
        if dest_url:
            try:
                self.client.stage_discard(dest_url, key)
            except exchange_client.ExchangeError as error:
                # A dead destination discards at its next start.
                LOG.warning('Could not ask %s to discard move %s: %s',
                            dest_url, key, error)
        self._release(context, instance, exported)
        move_volumes.attach_again(self.backend, context, instance, detached)
        if power_on:
            try:
                self.backend.power_on(context, instance, network_info,
                                      block_device_info)
            except Exception:
                LOG.exception('Could not power the original of instance %s '
                              'back on', instance.uuid, instance=instance)
        self.journal.remove(source_record_key(key))

    def _release(self, context, instance, exported):
        if not exported:
            return
        try:
            self.backend.release_exported_disks(context, instance, exported)
        except Exception:
            LOG.exception('Could not release the exported disks of instance '
                          '%s', instance.uuid, instance=instance)
