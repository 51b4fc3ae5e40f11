"""Disks streamed from the vmdk stream writer into vcsim's NFC upload.

``stage_disk_streams`` (a move into vSphere) takes each disk as a
translate.TranslationStream: the writer's output goes into the HTTP PUT
(chunked) while the writer still reads and deflates; no local copy.  A
stream cut in the middle, by the network or by the writer, must leave
nothing: no VM, no folder on the datastore, the source unchanged.
"""

import os
import socket
import threading

import pytest

from nova_xhv.backends.vmware import nfc
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate
from tests.fixtures import disks
from tests.functional.translate import helpers
from tests.functional.vmware.conftest import make_instance
from tests.functional.vmware.test_backend import _vm_by_uuid

pytestmark = pytest.mark.timeout(180)
MiB = 1024 * 1024


@pytest.fixture
def qcow2_source(tmp_path):
    """A 256 MiB qcow2 with 48 MiB of data (random and text) and its raw."""
    raw = str(tmp_path / 'source.raw')
    with open(raw, 'wb') as f:
        f.truncate(256 * MiB)
        f.write(os.urandom(32 * MiB))
        f.seek(200 * MiB)
        f.write(b'a moved disk, compressible ' * (16 * MiB // 27))
    qcow2 = str(tmp_path / 'source.qcow2')
    helpers.qemu('convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2)
    return {'raw': raw, 'qcow2': qcow2, 'sha256': disks.sha256_file(qcow2)}


def _descriptor(stream):
    return DiskDescriptor(format='vmdk', subformat='streamOptimized',
                          virtual_size=stream.virtual_size, bus='lsiLogic',
                          url='https://source.invalid/disk-0')


class CuttingProxy(object):
    """A TCP proxy to vcsim that drops the connection mid-request.

    After ``limit`` bytes of the request: the network failing in the
    middle of an upload (TLS passes through untouched).
    """

    def __init__(self, host, port, limit):
        self.upstream = (host, port)
        self.limit = limit
        self.forwarded = 0
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(self.upstream)
        back = threading.Thread(target=self._pump_back,
                                args=(server, client), daemon=True)
        back.start()
        try:
            while self.forwarded < self.limit:
                data = client.recv(65536)
                if not data:
                    break
                server.sendall(data)
                self.forwarded += len(data)
        except OSError:
            pass
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        back.join(5)

    @staticmethod
    def _pump_back(server, client):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    return
                client.sendall(data)
        except OSError:
            return

    def close(self):
        self.listener.close()


def _leftovers(backend, vcsim, admin_si, instance):
    found = []
    if _vm_by_uuid(admin_si, instance.uuid) is not None:
        found.append('VM')
    if os.path.exists(os.path.join(vcsim.datastore_dir(), instance.uuid)):
        found.append('datastore folder')
    staging = backend._staging_root
    if os.path.isdir(staging) and os.listdir(staging):
        found.append('staging: %s' % os.listdir(staging))
    return found


def test_a_stream_is_uploaded_as_it_is_written(make_backend, admin_si,
                                               vcsim, qcow2_source):
    backend = make_backend()
    assert backend.accepts_disk_streams()
    instance = make_instance()
    with translate.open_stream(qcow2_source['qcow2'],
                               from_format='qcow2') as stream:
        staged, results = backend.stage_disk_streams(
            None, instance, [_descriptor(stream)], [stream])
    stored = os.path.join(vcsim.datastore_dir(), instance.uuid,
                          instance.uuid + '.vmdk')
    # vcsim keeps the upload verbatim: it is the writer's whole stream.
    assert os.path.getsize(stored) == results[0].bytes_written
    helpers.qemu('check', '-f', 'vmdk', stored)
    assert translate.compare(stored, 'vmdk', qcow2_source['raw'], 'raw')
    # No local copy was ever made.
    assert not os.listdir(backend._staging_root)
    assert staged[0].handle.endswith(instance.uuid + '.vmdk')
    backend.discard_staged_disks(None, instance, staged)
    assert _leftovers(backend, vcsim, admin_si, instance) == []


def test_a_connection_cut_mid_stream_leaves_nothing(
        make_backend, admin_si, vcsim, qcow2_source, monkeypatch):
    backend = make_backend()
    instance = make_instance()
    proxy = CuttingProxy(vcsim.host, vcsim.port, limit=8 * MiB)
    real_url = nfc._device_url
    monkeypatch.setattr(nfc, '_device_url', lambda session, url: real_url(
        session, url).replace(':%d/' % vcsim.port, ':%d/' % proxy.port))
    try:
        with translate.open_stream(qcow2_source['qcow2'],
                                   from_format='qcow2') as stream:
            with pytest.raises(OSError):
                backend.stage_disk_streams(None, instance,
                                           [_descriptor(stream)], [stream])
    finally:
        proxy.close()
    assert 8 * MiB <= proxy.forwarded < 40 * MiB
    assert _leftovers(backend, vcsim, admin_si, instance) == []
    assert disks.sha256_file(qcow2_source['qcow2']) == qcow2_source['sha256']


def test_a_writer_failing_mid_stream_leaves_nothing(
        make_backend, admin_si, vcsim, qcow2_source):
    backend = make_backend()
    instance = make_instance()
    cancel = threading.Event()

    def progress(percent):
        if percent >= 5:
            cancel.set()

    with translate.open_stream(qcow2_source['qcow2'], from_format='qcow2',
                               progress=progress,
                               cancel_event=cancel) as stream:
        with pytest.raises(translate.ConversionFailed, match='cancelled'):
            backend.stage_disk_streams(None, instance,
                                       [_descriptor(stream)], [stream])
    assert _leftovers(backend, vcsim, admin_si, instance) == []
    assert disks.sha256_file(qcow2_source['qcow2']) == qcow2_source['sha256']
