"""Destination side of a move: pull, inspect, translate, stage.

``DestinationStager`` is the control handler of a destination's exchange
endpoint.
``POST /stage`` starts one job per move (keyed by the Migration uuid) in a
background thread; for each disk the job streams the source's published
disk straight into the translation engine (qemu's curl driver reads it
with Range requests: one pass, no intermediate copy), which inspects it
with its safety rules and writes the destination's native format into
``[xhv] migration_state_dir/<key>/``; then the backend uploads the result
into its hypervisor's storage, unattached (``Backend.stage_disks``).
The source polls ``GET /stage/<key>``; ``DELETE /stage/<key>`` cancels a
running job or discards what it staged.

Every job is journaled (``<state dir>/<key>.json``) until
``finish_migration`` consumes it or it is discarded, so disks staged
before a crash are found and removed at the next start
(``cleanup_leftovers``).
"""

import os
import shutil
import threading
import time

from nova import context as nova_context
from nova import exception
from nova import objects
from nova import utils as nova_utils
from oslo_log import log as logging

from nova_xhv import disk as xhv_disk
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import exchange
from nova_xhv.migration import hardware
from nova_xhv.migration import journal
from nova_xhv import translate

LOG = logging.getLogger(__name__)

RUNNING = 'running'
DONE = 'done'
FAILED = 'failed'
DISCARDED = 'discarded'


# A server has at most a few dozen volumes (Nova's
# [compute] max_disk_devices_to_attach); more in one check is malformed.
MAX_CHECKED_VOLUMES = 256


class StageCancelled(Exception):
    pass


class _Job(object):

    def __init__(self, key, request):
        self.key = key
        self.request = request
        self.state = RUNNING
        self.stage = 'queued'
        self.percent = 0
        self.bytes = 0
        self.error = None
        self.staged = []
        self.hardware = None
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.instance = None
        self.timings = {}

    def report(self):
        with self.lock:
            return {'key': self.key, 'state': self.state, 'stage': self.stage,
                    'percent': self.percent, 'bytes': self.bytes,
                    'error': self.error, 'timings': dict(self.timings),
                    'hardware': self.hardware,
                    'staged': [d.to_dict() for d in self.staged]}


class DestinationStager(object):
    """Runs staging jobs for the backend of this compute."""

    def __init__(self, backend, state_dir, convert_options, remote_options,
                 accepted_families=(), disk_bus_default='sata',
                 nic_model_default='e1000', original_lookup=None,
                 policy=None):
        """Stage for ``backend``.

        :param remote_options: dict of RemoteSource keywords besides url,
            format, username and password (ca_file, insecure).
        """
        self.backend = backend
        self.journal = journal.Journal(state_dir)
        self._convert_options = convert_options
        self._remote_options = dict(remote_options)
        self._accepted = tuple(f.strip().lower() for f in accepted_families
                               if f.strip())
        self._defaults = (disk_bus_default, nic_model_default)
        # instance uuid -> journal key of an original this compute keeps
        # (it was the source of a move not yet confirmed), or None.
        self._original_lookup = original_lookup
        # The compute's policy enforcer (nova_xhv.policy.enforcer), or None.
        self.policy = policy
        self._jobs = {}
        self._lock = threading.Lock()

    # -- control handler (exchange endpoint) -------------------------------

    def probe_original(self, request):
        """``POST /originals``: is a server's untouched original here?

        Asked by a move back to this compute after a failed
        finish_migration (it was the source of the failed move).
        """
        lookup = self._original_lookup
        return {'original_key': lookup(request.get('instance_uuid'))
                if lookup else None}

    def check_volumes(self, request):
        """``POST /volumes``: which of these volumes this compute refuses.

        Asked by a source before it powers anything off.  ``volumes``:
        [{'id', 'connection_info'}] (the type, export, file name and
        format of each; no credentials); the answer's ``refused``:
        [{'id', 'reason'}] from ``Backend.check_volume_attachable``.
        """
        volumes = request.get('volumes')
        if not isinstance(volumes, list) or not volumes or \
                len(volumes) > MAX_CHECKED_VOLUMES:
            raise exchange.ControlError(
                'volumes: a list of 1 to %d volumes' % MAX_CHECKED_VOLUMES)
        refused = []
        for volume in volumes:
            info = volume.get('connection_info') if isinstance(
                volume, dict) else None
            if not isinstance(info, dict) or not isinstance(
                    info.get('data', {}), dict):
                raise exchange.ControlError('each volume has an id and a '
                                            'connection_info object')
            volume_id = str(volume.get('id'))[:64]
            try:
                self.backend.check_volume_attachable(info)
            except exception.NovaException as error:
                refused.append({'id': volume_id, 'reason': str(error)})
        return {'family': self.backend.family, 'refused': refused}

    def stage_start(self, request):
        if request.get('probe_original'):
            # The same question from a source of an older XHV.
            return self.probe_original(request)
        key = _check_key(request.get('key'))
        source_family = request.get('source_family')
        if self._accepted and source_family not in self._accepted:
            raise exchange.ControlError(
                'this compute accepts servers from %s only ([xhv] '
                'accepted_source_families), not from %s'
                % (', '.join(self._accepted), source_family), status=403)
        self._recheck_policy(request)
        disks = request.get('disks') or []
        if not request.get('instance_uuid') or not (
                disks or request.get('volume_backed') is True):
            raise exchange.ControlError('a stage request names an instance '
                                        'and at least one disk (or says it '
                                        'is volume-backed)')
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in (RUNNING, DONE):
                return job.report()
            job = _Job(key, request)
            self._jobs[key] = job
        self.journal.write(key, {'instance_uuid': request['instance_uuid'],
                                 'role': 'destination', 'staged': []})
        thread = threading.Thread(target=self._run, args=(job,),
                                  name='xhv-stage-%s' % key, daemon=True)
        thread.start()
        return job.report()

    def _recheck_policy(self, request):
        """Refuse a move this compute's policy would not allow.

        The source signs its policy digest and the input document it
        decided on into the stage request: computes whose policies
        drifted apart refuse (409) instead of each enforcing its own; the
        same policy is asked again here, with this compute as the
        enforcement point (403 and the rule ids when it denies).
        """
        if self.policy is None:
            return
        claim = request.get('policy')
        if not isinstance(claim, dict) or not claim.get('digest'):
            raise exchange.ControlError(
                'the source sent no XHV policy digest; this compute '
                'enforces policy %s: upgrade the source'
                % (self.policy.digest or 'unavailable')[:16], status=409)
        if claim['digest'] != self.policy.digest:
            raise exchange.ControlError(
                'XHV policy digest mismatch: the source runs %s, this '
                'compute %s; install the same policy files on every node'
                % (str(claim['digest'])[:16],
                   (self.policy.digest or 'unavailable')[:16]), status=409)
        document = claim.get('input')
        if not isinstance(document, dict):
            raise exchange.ControlError('the policy claim carries no input '
                                        'document')
        destination = document.get('destination') or {}
        if destination.get('family') != self.backend.family:
            raise exchange.ControlError(
                'the policy input names a %s destination; this compute is '
                '%s' % (destination.get('family'), self.backend.family),
                status=403)
        document = dict(document, point='exchange')
        try:
            decision = self.policy.decide(document)
        except ValueError as error:  # a malformed document
            raise exchange.ControlError('bad policy input: %s' % error)
        if not decision.allowed:
            raise exchange.ControlError(decision.reason(), status=403)

    def stage_status(self, key):
        job = self._job(key)
        return job.report()

    def stage_discard(self, key):
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            # Not in memory (e.g. after a restart): the journal may still
            # know what was staged.
            self._discard_journaled(key)
            return {'key': key, 'state': DISCARDED}
        job.cancel.set()
        with job.lock:
            running = job.state == RUNNING
        if not running:
            self._discard(job)
        return {'key': key, 'state': DISCARDED if not running else RUNNING}

    def _job(self, key):
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            raise exchange.ControlError('no staging job %s here' % key,
                                        status=404)
        return job

    # -- the job -----------------------------------------------------------

    def _run(self, job):
        workdir = self.journal.workdir(job.key)
        try:
            self._stage(job, workdir)
            with job.lock:
                if job.cancel.is_set():
                    raise StageCancelled()
                job.state, job.stage, job.percent = DONE, 'staged', 100
        except Exception as error:
            cancelled = (isinstance(error, StageCancelled)
                         or job.cancel.is_set())
            if not cancelled:
                LOG.warning('Staging move %s of instance %s failed: %s: %s',
                            job.key, job.request['instance_uuid'],
                            type(error).__name__, error)
            try:
                self._discard(job)
            except Exception:
                LOG.exception('Move %s: staged disks left behind; they are '
                              'removed at the next start of this compute',
                              job.key)
            with job.lock:
                job.state = DISCARDED if cancelled else FAILED
                job.error = '%s: %s' % (type(error).__name__, error)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _stage(self, job, workdir):
        request = job.request
        context = nova_context.get_admin_context()
        instance = objects.Instance.get_by_uuid(
            context, request['instance_uuid'],
            expected_attrs=['flavor', 'system_metadata'])
        if instance.new_flavor is not None:
            instance.flavor = instance.new_flavor  # a resize: the new size
        job.instance = instance
        image_meta = nova_utils.get_image_from_system_metadata(
            instance.system_metadata)
        classes = hardware.choose(
            request.get('source_family'), self.backend.family,
            request.get('source_hardware') or {},
            image_meta.get('properties') or {}, *self._defaults)
        native_bus = hardware.native_name(self.backend.family,
                                          hardware.DISK_BUS,
                                          classes[hardware.DISK_BUS])
        with job.lock:
            job.hardware = classes
        incoming = [xhv_disk.DiskDescriptor.from_dict(d['disk'])
                    for d in request['disks']]
        if incoming:
            # (A volume-backed server brings none: its volumes follow.)
            self.backend.check_stageable(context, instance, incoming)
        streams = getattr(self.backend, 'accepts_disk_streams', None)
        if incoming and streams is not None and streams() and \
                translate.stream_write.targets(
                    self.backend.native_format,
                    self.backend.native_subformat):
            staged = self._stage_streams(job, context, instance, incoming,
                                         native_bus)
        else:
            staged = self._stage_files(job, context, instance, incoming,
                                       native_bus, workdir)
        with job.lock:
            job.staged = staged
        self.journal.write(job.key, {
            'instance_uuid': instance.uuid, 'role': 'destination',
            'staged': [d.to_dict() for d in staged]})

    def _source(self, job, n, disk):
        item = job.request['disks'][n]
        source = translate.RemoteSource(
            disk.url, format=disk.format, username=item['disk_id'],
            password=item['token'], **self._remote_options)
        source.direct = self._direct_read(job, source)
        return source

    def _progress(self, job, incoming, n):
        total = sum(d.virtual_size for d in incoming) or 1
        before = sum(d.virtual_size for d in incoming[:n])
        size = incoming[n].virtual_size

        def progress(percent):
            self._set(job, percent=int(
                95 * (before + size * percent / 100.0) / total))
        return progress

    def _tls_explained(self, error):
        return translate.TLSVerificationFailed(
            '%s. This compute verifies the source against [xhv] '
            'exchange_ca_file (%s): set it to the CA that signed '
            'the other computes\' exchange certificates' % (
                error, self._remote_options.get('ca_file')
                or 'unset: the system trust store'))

    def _stage_files(self, job, context, instance, incoming, native_bus,
                     workdir):
        """Translate each disk into a local file, then stage the files."""
        translated = []
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        started = time.monotonic()
        for n, disk in enumerate(incoming):
            self._set(job, stage='translate')
            target = os.path.join(workdir, 'disk-%d.%s' % (
                n, self.backend.native_format))
            try:
                result = translate.convert(
                    self._source(job, n, disk), target,
                    to_format=self.backend.native_format,
                    from_format=disk.format,
                    subformat=self.backend.native_subformat,
                    options=self._convert_options,
                    progress=self._progress(job, incoming, n),
                    cancel_event=job.cancel)
            except translate.TLSVerificationFailed as error:
                raise self._tls_explained(error)
            with job.lock:
                job.bytes += result.bytes_read or 0
            translated.append(xhv_disk.DiskDescriptor(
                format=self.backend.native_format,
                subformat=self.backend.native_subformat,
                virtual_size=result.virtual_size, path=target,
                bus=native_bus, boot_index=disk.boot_index,
                device_name=None, handle=disk.handle))
            self._log_translated(job, n, instance, disk, result)
            if job.cancel.is_set():
                raise StageCancelled()
        job.timings['translate'] = time.monotonic() - started
        self._set(job, stage='upload', percent=95)
        started = time.monotonic()
        # A volume-backed server brings no disks: its volumes follow.
        staged = (self.backend.stage_disks(context, instance, translated)
                  if translated else [])
        job.timings['upload'] = time.monotonic() - started
        return staged

    def _stage_streams(self, job, context, instance, incoming, native_bus):
        """Translate each disk straight into the backend's upload.

        No local copy: the vmdk stream writer writes into the upload while
        it reads the source, so pulling, deflating and uploading overlap.
        """
        self._set(job, stage='translate+upload')
        started = time.monotonic()
        streams = []
        try:
            for n, disk in enumerate(incoming):
                try:
                    streams.append(translate.open_stream(
                        self._source(job, n, disk), from_format=disk.format,
                        options=self._convert_options,
                        progress=self._progress(job, incoming, n),
                        cancel_event=job.cancel, name='disk-%d.vmdk' % n))
                except translate.TLSVerificationFailed as error:
                    raise self._tls_explained(error)
            disks = [xhv_disk.DiskDescriptor(
                format=self.backend.native_format,
                subformat=self.backend.native_subformat,
                virtual_size=stream.virtual_size, url=disk.url,
                bus=native_bus, boot_index=disk.boot_index,
                device_name=None, handle=disk.handle)
                for disk, stream in zip(incoming, streams)]
            staged, results = self.backend.stage_disk_streams(
                context, instance, disks, streams)
        finally:
            for stream in streams:
                stream.close()
        for n, (disk, result) in enumerate(zip(incoming, results)):
            with job.lock:
                job.bytes += result.bytes_read or 0
            self._log_translated(job, n, instance, disk, result)
        job.timings['translate+upload'] = time.monotonic() - started
        if job.cancel.is_set():
            with job.lock:
                job.staged = staged  # _run discards them
            raise StageCancelled()
        return staged

    def _log_translated(self, job, n, instance, disk, result):
        LOG.info('Move %s: disk %d of instance %s pulled and translated '
                 '(%s %s -> %s, %d bytes written, %.1f s)', job.key, n,
                 instance.uuid, disk.format, disk.subformat or '',
                 self.backend.native_format, result.bytes_written,
                 result.elapsed)

    def _direct_read(self, job, source):
        """The source's one-time direct read of a disk, or None."""
        return exchange_client.request_direct_read(
            source, self._remote_options, 'Move %s' % job.key)

    @staticmethod
    def _set(job, **values):
        with job.lock:
            for name, value in values.items():
                setattr(job, name, value)
        if 'stage' in values:
            LOG.info('Move %s: %s', job.key, values['stage'])

    # -- discard / cleanup -------------------------------------------------

    def _discard(self, job):
        with job.lock:
            staged, job.staged = job.staged, []
        if staged:
            self._discard_disks(job.instance, job.request['instance_uuid'],
                                staged)
        self.journal.remove(job.key)

    def _discard_disks(self, instance, instance_uuid, staged):
        context = nova_context.get_admin_context()
        if instance is None:
            instance = _instance_or_stub(context, instance_uuid)
        try:
            self.backend.discard_staged_disks(context, instance, staged)
            LOG.info('Discarded %d staged disk(s) of instance %s',
                     len(staged), instance_uuid)
        except Exception:
            LOG.exception('Could not discard staged disks of instance %s',
                          instance_uuid)
            raise

    def _discard_journaled(self, key):
        record = self.journal.read(key)
        if record is None:
            return
        if record.get('role') == 'destination' and record.get('staged'):
            self._discard_disks(
                None, record['instance_uuid'],
                [xhv_disk.DiskDescriptor.from_dict(d)
                 for d in record['staged']])
        self.journal.remove(key)
        shutil.rmtree(self.journal.workdir(key), ignore_errors=True)

    def consumed(self, key):
        """finish_migration made the server from the staged disks."""
        with self._lock:
            self._jobs.pop(key, None)
        self.journal.remove(key)

    def cleanup_leftovers(self):
        """Remove what unfinished moves staged before a restart."""
        removed = []
        for key, record in self.journal.records():
            if record.get('role') != 'destination':
                continue
            try:
                self._discard_journaled(key)
                removed.append(key)
            except Exception:
                LOG.exception('Could not remove leftovers of move %s', key)
        self.journal.remove_orphan_workdirs()
        return removed


def _check_key(key):
    if not key or not isinstance(key, str) or not all(
            c.isalnum() or c in '-_.' for c in key) or len(key) > 128:
        raise exchange.ControlError('bad or missing move key')
    return key


def _instance_or_stub(context, instance_uuid):
    try:
        return objects.Instance.get_by_uuid(
            context, instance_uuid, expected_attrs=['flavor',
                                                    'system_metadata'])
    except Exception:
        # Deleted meanwhile: backends need little more than the uuid to
        # discard.
        return objects.Instance(uuid=instance_uuid)
