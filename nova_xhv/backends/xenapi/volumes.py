"""Cinder file volumes on XenServer / XCP-ng, in place, without conversion.

A raw volume file on an NFS export (Cinder's NFS driver, wrapped by XHV)
is what a file-based SR calls a raw VDI: SMAPI's NFS SR driver (a
FileSR) keeps each VDI as ``<location>.raw`` (``sm-config:type=raw``,
served by tapdisk's aio driver as it is) or ``<location>.vhd`` in the SR's
folder, which for an NFS SR is ``<export>/<SR uuid>/``, mounted by every
host of the pool through its PBD.  So, per export and pool:

* XHV introduces one NFS SR (``SR.introduce``, type ``nfs``, shared,
  content type ``xhv-volumes``), whose uuid is derived from the export
  (the same on every compute, so no second SR is made), and plugs a PBD
  (``device-config: server, serverpath``) on each host;
* the volume file gets a second name in the SR's folder,
  ``<export>/<SR uuid>/<volume file>.raw`` -- a hard link, made by this
  compute through its own mount of the export (``[xhv_xenapi]
  volume_exports``, the mount a KVM compute makes for the same volume);
  nothing is copied, the data are the volume's;
* ``VDI.introduce`` makes it a VDI (location = the volume file's name,
  ``sm_config: type=raw``; a uuid derived from SR and file, so an attach
  after a crash finds it again), then a VBD on the VM (plugged when the VM
  runs).

Detach unplugs and destroys the VBD, ``VDI.forget`` s the VDI (never
``VDI.destroy``: the SR driver would delete the file) once no other VBD
uses it, and removes the second name.  The SR stays introduced for the
next volume of that export.
"""

import errno
import os
import uuid as uuidlib

from nova import exception
from oslo_log import log as logging

from nova_xhv.backends import nfs_volume
from nova_xhv.backends.xenapi import session as xsession

LOG = logging.getLogger(__name__)

SR_TYPE = 'nfs'
SR_CONTENT_TYPE = 'xhv-volumes'
VOLUME_KEY = 'xhv_volume'
EXPORT_KEY = 'xhv_volume_export'
RAW_SUFFIX = '.raw'
NULL = 'OpaqueRef:NULL'
# Names derived from the export / volume file: the same on every compute.
_NAMESPACE = uuidlib.UUID('6f1c0c52-7a0e-4a55-9d35-0b7f2d0e8a21')


class XenVolumeError(exception.Invalid):
    msg_fmt = 'The XHV xenapi backend cannot attach this volume: %(reason)s'


def _safe_name(name):
    return bool(name) and '/' not in name and not name.startswith('.') \
        and '\0' not in name and len(name) <= 200


def parse_exports(pairs):
    """{(nfs host, export path): local folder} from volume_exports."""
    found = {}
    for pair in pairs or ():
        export, sep, local = pair.partition('=')
        host, colon, path = export.strip().partition(':')
        local = local.strip()
        if not (sep and colon and host and path.startswith('/')
                and os.path.isabs(local)):
            raise ValueError('[xhv_xenapi] volume_exports: %r is not '
                             '<nfs host>:/<export path>=/<local folder>'
                             % pair)
        found[(host, path.rstrip('/') or '/')] = local.rstrip('/') or '/'
    return found


def file_volume(connection_info):
    """(nfs host, export path, file name) of a raw NFS volume's info."""
    return nfs_volume.raw_file_volume(connection_info, 'Xen',
                                      XenVolumeError, _safe_name)


def sr_uuid_for(host, path):
    return str(uuidlib.uuid5(_NAMESPACE, 'nfs-sr:%s:%s' % (host, path)))


def vdi_uuid_for(sr_uuid, name):
    return str(uuidlib.uuid5(_NAMESPACE, 'vdi:%s:%s' % (sr_uuid, name)))


class VolumeAttacher(object):
    """Attach and detach raw NFS volume files for one pool."""

    def __init__(self, xapi, exports):
        self.xapi = xapi
        self.exports = exports

    # -- where the files are ------------------------------------------------

    def _local_folder(self, host, path):
        for (mhost, mpath), local in self.exports.items():
            if mhost != host:
                continue
            if path == mpath:
                return local
            if path.startswith(mpath.rstrip('/') + '/'):
                below = path[len(mpath.rstrip('/')) + 1:]
                if all(_safe_name(p) for p in below.split('/')):
                    return os.path.join(local, below)
        raise XenVolumeError(
            reason='this compute has no mount of the NFS export %s:%s: '
                   'add %s:%s=/<its mount point> to [xhv_xenapi] '
                   'volume_exports (XHV names the volume file in the SR '
                   'folder through it)' % (host, path, host, path))

    def check(self, connection_info):
        """Raise unless ``attach`` could link the volume file; no change."""
        volume_file = self._paths(connection_info)[4]
        if not os.path.isfile(volume_file):
            raise XenVolumeError(
                reason='the volume file %s does not exist on this '
                       'compute\'s mount of its export (is [xhv_xenapi] '
                       'volume_exports right, the export mounted?)'
                       % volume_file)

    def _paths(self, connection_info):
        """(host, path, name, SR uuid, volume file, its name in the SR)."""
        host, path, name = file_volume(connection_info)
        local = self._local_folder(host, path)
        sr_uuid = sr_uuid_for(host, path)
        return (host, path, name, sr_uuid, os.path.join(local, name),
                os.path.join(local, sr_uuid, name + RAW_SUFFIX))

    # -- the SR -------------------------------------------------------------

    def _find(self, cls, uuid):
        try:
            return self.xapi.call('%s.get_by_uuid' % cls, uuid)
        except xsession.XapiError as exc:
            if xsession.error_code(exc) == 'UUID_INVALID':
                return None
            raise

    def _sr(self, host, path, sr_uuid):
        """The export's SR, introduced and plugged on every host."""
        sr = self._find('SR', sr_uuid)
        if sr is None:
            sr = self.xapi.call(
                'SR.introduce', sr_uuid, 'XHV volumes %s:%s' % (host, path),
                'Cinder volumes attached in place by OpenStack XHV',
                SR_TYPE, SR_CONTENT_TYPE, True, {})
            LOG.info('Introduced SR %s for NFS export %s:%s', sr_uuid, host,
                     path)
        plugged = {}
        for pbd in self.xapi.call('SR.get_PBDs', sr):
            record = self.xapi.call('PBD.get_record', pbd)
            plugged[record['host']] = (pbd, record['currently_attached'])
        for host_ref in self.xapi.call('host.get_all'):
            pbd, attached = plugged.get(host_ref, (None, False))
            if pbd is None:
                pbd = self.xapi.call('PBD.create', {
                    'host': host_ref, 'SR': sr,
                    'device_config': {'server': host, 'serverpath': path},
                    'other_config': {}})
            if not attached:
                self.xapi.call('PBD.plug', pbd)
        return sr

    # -- attach / detach ------------------------------------------------------

    def _link(self, volume_file, link):
        if not os.path.isfile(volume_file):
            raise XenVolumeError(reason='the volume file %s does not exist '
                                        'on this compute\'s mount of its '
                                        'export' % volume_file)
        os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
        try:
            os.link(volume_file, link)
        except FileExistsError:
            if not os.path.samefile(volume_file, link):
                raise XenVolumeError(reason='%s exists and is not the '
                                            'volume file' % link)

    @staticmethod
    def _unlink(link):
        try:
            os.unlink(link)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def volume_vbds(self, vm_ref, name=None):
        """[(VBD ref, VBD record)] of XHV volumes on the VM (or ``name``)."""
        found = []
        for vbd in self.xapi.call('VM.get_VBDs', vm_ref):
            record = self.xapi.call('VBD.get_record', vbd)
            volume = record['other_config'].get(VOLUME_KEY)
            if volume and (name is None or volume == name):
                found.append((vbd, record))
        return found

    def attach(self, instance, vm_ref, connection_info, running,
               boot=False):
        """``boot``: the VM boots from it (bootable VBD, device 0)."""
        host, path, name, sr_uuid, volume_file, link = self._paths(
            connection_info)
        if self.volume_vbds(vm_ref, name):
            LOG.info('Volume file %s is already attached to %s', name,
                     instance.uuid)
            return
        if boot and '0' in [self.xapi.call('VBD.get_userdevice', vbd)
                            for vbd in self.xapi.call('VM.get_VBDs',
                                                      vm_ref)]:
            raise XenVolumeError(reason='device 0 of the VM of %s, where '
                                        'it boots from, is taken'
                                 % instance.uuid)
        made_link = not os.path.exists(link)
        self._link(volume_file, link)
        try:
            sr = self._sr(host, path, sr_uuid)
            vdi_uuid = vdi_uuid_for(sr_uuid, name)
            vdi = self._find('VDI', vdi_uuid)
            if vdi is None:
                vdi = self.xapi.call(
                    'VDI.introduce', vdi_uuid, name, '', sr, 'user', False,
                    False, {}, name, {}, {'type': 'raw'}, True, '0', '0',
                    NULL, False, '19700101T00:00:00Z', NULL)
                # The SR driver fills the record; these are ours.
                self.xapi.call('VDI.set_name_label', vdi, name)
                self.xapi.call('VDI.add_to_other_config', vdi, VOLUME_KEY,
                               name)
            vbd = self.xapi.call('VBD.create', {
                'VM': vm_ref, 'VDI': vdi,
                'userdevice': '0' if boot else 'autodetect',
                'bootable': bool(boot), 'mode': 'RW', 'type': 'Disk',
                'empty': False, 'unpluggable': True,
                'other_config': {VOLUME_KEY: name,
                                 EXPORT_KEY: '%s:%s' % (host, path)},
                'qos_algorithm_type': '', 'qos_algorithm_params': {}})
            if running:
                try:
                    self.xapi.call('VBD.plug', vbd, instance=instance)
                except Exception:
                    self.xapi.call('VBD.destroy', vbd)
                    raise
        except Exception:
            self._release(name, sr_uuid, link if made_link else None)
            raise
        LOG.info('Attached volume file %s (SR %s) to %s%s', name, sr_uuid,
                 instance.uuid, ' as its boot disk' if boot else '')

    def detach(self, instance, vm_ref, connection_info):
        _, _, name, sr_uuid, _, link = self._paths(connection_info)
        if vm_ref is not None:
            self.remove_vbds(instance, self.volume_vbds(vm_ref, name))
        self._release(name, sr_uuid, link)

    def remove_vbds(self, instance, vbds):
        for vbd, record in vbds:
            if record['currently_attached']:
                self.xapi.call('VBD.unplug', vbd, instance=instance)
            self.xapi.call('VBD.destroy', vbd)

    def _release(self, name, sr_uuid, link):
        """Forget the VDI once nothing uses it, then drop the SR name.

        The SR goes with its last volume (PBDs unplugged, ``SR.forget``):
        nothing of XHV's stays on the pool or in the export.
        """
        vdi = self._find('VDI', vdi_uuid_for(sr_uuid, name))
        if vdi is not None:
            if self.xapi.call('VDI.get_VBDs', vdi):
                return  # another VM still has it
            self.xapi.call('VDI.forget', vdi)
        if link:
            self._unlink(link)
        sr = self._find('SR', sr_uuid)
        if sr is None or self.xapi.call('SR.get_VDIs', sr):
            return
        for pbd in self.xapi.call('SR.get_PBDs', sr):
            if self.xapi.call('PBD.get_currently_attached', pbd):
                self.xapi.call('PBD.unplug', pbd)
            self.xapi.call('PBD.destroy', pbd)
        self.xapi.call('SR.forget', sr)
        LOG.info('Forgot SR %s: no XHV volume of its export is attached',
                 sr_uuid)
        if link:
            try:
                os.rmdir(os.path.dirname(link))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise

    def release_all(self, instance, vm_ref):
        """Detach every XHV volume of a VM being destroyed (files stay)."""
        vbds = self.volume_vbds(vm_ref)
        self.remove_vbds(instance, vbds)
        for _, record in vbds:
            name = record['other_config'][VOLUME_KEY]
            host, _, path = record['other_config'].get(
                EXPORT_KEY, '').partition(':')
            info = {'driver_volume_type': 'nfs',
                    'data': {'export': '%s:%s' % (host, path),
                             'name': name}}
            try:
                _, _, _, sr_uuid, _, link = self._paths(info)
            except XenVolumeError as exc:
                LOG.warning('Volume %s of %s: %s; its VDI stays introduced',
                            name, instance.uuid, exc)
                continue
            self._release(name, sr_uuid, link)
