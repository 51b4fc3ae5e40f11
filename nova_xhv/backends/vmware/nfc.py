"""Disk streams through an HttpNfcLease: ImportVApp (upload
streamOptimized vmdk, vSphere writes the disks) and ExportVm (download each
disk of a powered-off VM)."""

import os
import threading
import time

from oslo_log import log as logging
from pyVmomi import vim

from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import inventory
from nova_xhv.backends.vmware import transfer

LOG = logging.getLogger(__name__)
LEASE_READY_TIMEOUT = 300
PROGRESS_EVERY = 30  # seconds; real leases expire after ~5 min of silence


class _Lease:
    """Keeps a lease alive and completes or aborts it."""

    def __init__(self, session, lease, what):
        self.session = session
        self.lease = lease
        self.what = what
        self.percent = 0
        self._stop = threading.Event()
        self._thread = None

    def wait_ready(self, timeout=LEASE_READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            # One PropertyCollector read (not per-property accessors).
            found = inventory.retrieve(
                self.session, self.what, self.lease, [],
                {vim.HttpNfcLease: ['state', 'error', 'info']})
            props = found[0][1] if found else {}
            state = props.get('state')
            if state == vim.HttpNfcLease.State.ready:
                info = props['info']
                self._thread = threading.Thread(target=self._keepalive,
                                                daemon=True)
                self._thread.start()
                return info
            if state == vim.HttpNfcLease.State.error:
                raise errors.task_error(props.get('error'), self.what)
            if time.monotonic() >= deadline:
                raise errors.VSphereTaskTimeout(what=self.what + ' lease',
                                                timeout=timeout,
                                                fault='Timeout', detail='')
            time.sleep(0.2)

    def _keepalive(self):
        while not self._stop.wait(PROGRESS_EVERY):
            try:
                self.lease.HttpNfcLeaseProgress(percent=self.percent)
            except Exception:  # the transfer itself reports real errors
                LOG.debug('lease progress failed', exc_info=True)

    def _finish(self, method, *args):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.session.run(self.what, method, *args)

    def complete(self):
        self._finish(self.lease.HttpNfcLeaseComplete)

    def abort(self, reason):
        try:
            fault = vim.fault.InvalidState(msg=str(reason)[:200])
            self._finish(self.lease.HttpNfcLeaseAbort, fault)
        except Exception:  # the lease may be gone already
            LOG.debug('lease abort failed', exc_info=True)


def _device_url(session, url):
    # vSphere hands out https://*/nfc/... for "the host you talk to".
    return url.replace('://*/', '://%s/' % session.endpoint, 1)


STREAM_VMDK = 'application/x-vnd.vmware-streamVmdk'


def import_vm(session, compute, spec, disks, timeout, discard=None):
    """Create a VM by ImportVApp and upload its disks.

    One streamOptimized vmdk per disk of ``spec``, in order: each a local
    file path, or a translate.TranslationStream that is written while it
    is uploaded (HTTP chunked transfer: its length is known only at its
    end).  Returns (the new VM, list of ConvertResult or None per disk).

    On any failure the lease is aborted (vSphere then removes what the
    import made) and ``discard(vm)`` removes the VM if it is still there
    (vcsim keeps it).
    """
    import_spec = vim.vm.VmImportSpec(configSpec=spec)
    what = 'ImportVApp %s' % spec.name
    lease_ref = session.run(what, compute.root_pool.ImportVApp, import_spec,
                            compute.vm_folder)
    lease = _Lease(session, lease_ref, what)
    info = None
    try:
        info = lease.wait_ready()
        urls = [d for d in info.deviceUrl if d.disk]
        if len(urls) != len(disks):
            raise errors.VSphereError(
                what=what, fault='DeviceMismatch',
                detail='lease offers %d disk URL(s) for %d disk(s)'
                       % (len(urls), len(disks)))
        results = []
        for n, (device, disk) in enumerate(zip(urls, disks)):
            url = _device_url(session, device.url)
            if isinstance(disk, str):
                _upload_file(session, url, disk, timeout, what)
                results.append(None)
            else:
                result, _ = disk.run(lambda reader, _url=url: _upload(
                    session, _url, reader, timeout, what, 'disk stream'))
                results.append(result)
            lease.percent = int((n + 1) * 100 / len(disks))
        vm = info.entity
        lease.complete()
        return vm, results
    except BaseException as exc:
        lease.abort(exc)
        if info is not None and discard is not None:
            try:
                discard(info.entity)
            except Exception:  # gone with the abort, as on vSphere
                LOG.debug('VM of aborted %s already gone', what,
                          exc_info=True)
        raise


def _upload_file(session, url, path, timeout, what):
    with open(path, 'rb') as f:
        _upload(session, url, f, timeout, what, path,
                length=os.fstat(f.fileno()).st_size)


def _upload(session, url, body, timeout, what, name, length=None):
    """PUT one disk; without ``length`` the body goes chunked."""
    headers = {'Content-Type': STREAM_VMDK}
    if length is not None:
        headers['Content-Length'] = str(length)
    with transfer.request(session, 'PUT', url, body=body, timeout=timeout,
                          headers=headers) as resp:
        if resp.status not in (200, 201):
            raise errors.VSphereError(
                what=what, fault='HTTP %d' % resp.status,
                detail='upload of %s refused: %s' % (
                    name, resp.read()[:200].decode(errors='replace')))


def export_vm(session, vm, instance, directory, timeout):
    """Download every disk of a powered-off VM through ExportVm.

    :returns: list of local file paths, in device order.
    """
    what = 'ExportVm %s' % instance.uuid
    lease = _Lease(session, session.run(what, vm.ExportVm,
                                        instance=instance), what)
    paths = []
    try:
        info = lease.wait_ready()
        for n, device in enumerate(d for d in info.deviceUrl if d.disk):
            local = os.path.join(directory, 'export-disk-%d.vmdk' % n)
            with transfer.request(session, 'GET',
                                  _device_url(session, device.url),
                                  timeout=timeout) as resp:
                if resp.status != 200:
                    raise errors.VSphereError(
                        what=what, fault='HTTP %d' % resp.status,
                        detail=resp.read()[:200].decode(errors='replace'))
                with open(local, 'wb') as f:
                    for chunk in resp.iter_content():
                        f.write(chunk)
            paths.append(local)
        lease.complete()
        return paths
    except BaseException as exc:
        lease.abort(exc)
        raise
