"""Cold moves between the cloud family and the others, through Nova.

The ``cloud`` compute (``cloud1``) stands for a second, real OpenStack
cloud (tests/fixtures/remote_cloud.py: Keystone, Glance, Placement,
Neutron, Nova with a compute keeping disks as files), started once for
this module (~50 s, ~750 MiB) and stopped when it is done.  Each pair runs
test_matrix's checks: move, revert (the untouched original runs again,
byte-identical), move again, confirm (the original is gone), contents
compared after each move; then nothing of the move is left on the remote
cloud (no staged or exported image, no server).
"""

import os
import re

import fixtures
import openstack.proxy

from nova_xhv.backends import family
from tests.fixtures import remote_cloud
from tests.functional.migration import base
from tests.functional.migration import test_matrix

CLOUD = 'cloud1'
# Nova's harness mocks this (OpenStackSDKFixture) for its own clients;
# the cloud backend's connection to the remote cloud needs the real one.
_REAL_GET_ENDPOINT = openstack.proxy.Proxy.get_endpoint
_REMOTE = []


def setUpModule():
    cloud = remote_cloud.RemoteCloud()
    _REMOTE.append(cloud)
    cloud.start()


def tearDownModule():
    while _REMOTE:
        _REMOTE.pop().stop()


def _start_cloud(tc, host=CLOUD, image_format='qcow2'):
    remote = _REMOTE[0]
    tc.flags(group='xhv_cloud', cloud=remote_cloud.ENTRY,
             clouds_yaml=remote.clouds_yaml, build_timeout=60,
             image_format=image_format,
             staging_dir=os.path.join(tc.workdir, 'cloud-staging'))
    return tc.start_compute(host, backend='cloud')


def _cloud_disk(tc, server):
    """The remote compute's file of the server's disk, and its format."""
    backend = tc.computes[CLOUD].manager.driver.backend
    remote = backend._find(tc.instance(server))
    tc.assertIsNotNone(remote, 'no remote server for %s' % server['id'])
    path = os.path.join(_REMOTE[0].state, 'nova', 'disks', remote.id)
    with open(path, 'rb') as f:
        magic = f.read(4)
    return path, {b'QFI\xfb': 'qcow2', b'KDMV': 'vmdk'}.get(magic, 'raw')


CLOUD_BEDS = dict(test_matrix.FAMILY_BEDS, cloud=test_matrix.Bed(
    CLOUD, _start_cloud,
    lambda tc: tc.make_image('qcow2', name='cloud-guest'), _cloud_disk))


class CloudMoveCase(test_matrix.MoveChecks, base.CrossHypervisorTestCase):
    """The harness with a cloud compute (pairs in the subclasses)."""

    beds = CLOUD_BEDS

    def set_up_backend(self):
        super().set_up_backend()
        mocked = openstack.proxy.Proxy.get_endpoint

        def get_endpoint(proxy, *args, **kwargs):
            auth = kwargs.get('auth') or getattr(proxy.session, 'auth', None)
            if str(getattr(auth, 'auth_url', '')).startswith(
                    _REMOTE[0].keystone):
                return _REAL_GET_ENDPOINT(proxy, *args, **kwargs)
            return mocked(*args, **kwargs)
        self.useFixture(fixtures.MonkeyPatch(
            'openstack.proxy.Proxy.get_endpoint', get_endpoint))

    def _remote_leftovers(self):
        """Remote servers and XHV images of the federation project."""
        admin = _REMOTE[0].admin()
        try:
            found = ['server:%s' % s.name for s in admin.compute.servers(
                all_projects=True)]
            found += ['image:%s' % i.name for i in admin.image.images()
                      if (i.name or '').startswith(('xhv-staged-',
                                                    'xhv-export-'))]
        finally:
            admin.close()
        return found


class TestCloudMoves(CloudMoveCase):
    """With the fake family: no libvirtd."""

    uses_kvm = False

    def test_fake_to_cloud(self):
        self._move_revert_move_confirm('fake', 'cloud')
        self.assertEqual([], self._remote_leftovers())

    def test_cloud_to_fake(self):
        self._move_revert_move_confirm('cloud', 'fake')
        self.assertEqual([], self._remote_leftovers())


class TestCloudStreamedMoves(CloudMoveCase):
    """``[xhv_cloud] image_format = vmdk``: the disk is streamed up."""

    uses_kvm = False
    beds = dict(CLOUD_BEDS, cloud=CLOUD_BEDS['cloud']._replace(
        start=lambda tc: _start_cloud(tc, image_format='vmdk')))

    def test_fake_to_cloud_streamed(self):
        self._move_revert_move_confirm('fake', 'cloud')
        self.assertEqual([], self._remote_leftovers())
        log = self.stdlog.logger.output
        # Translated straight into the upload: no local file staged.
        self.assertIn(': translate+upload', log)
        self.assertIn('as vmdk streamOptimized with the vmdk stream writer',
                      log)
        self.assertIsNone(re.search(r'Move \S+: (translate|upload)$', log,
                                    re.M))


class TestCloudKvmMoves(CloudMoveCase):
    """With KVM (real libvirtd): the guest boots after a move into KVM."""

    def test_kvm_to_cloud(self):
        self._move_revert_move_confirm('kvm', 'cloud')
        self.assertEqual([], self._remote_leftovers())

    def test_cloud_to_kvm(self):
        self._move_revert_move_confirm('cloud', 'kvm')
        self.assertEqual([], self._remote_leftovers())


class TestCloudSimulatedMoves(CloudMoveCase):
    """With vSphere (vcsim), Hyper-V and Xen simulators: no libvirtd."""

    uses_kvm = False


def _add_pair_tests():
    installed = set(family.families())
    for other in ('vmware', 'hyperv', 'xen'):
        if other not in installed:
            continue
        for source, dest in ((other, 'cloud'), ('cloud', other)):
            def test(self, _source=source, _dest=dest):
                self._move_revert_move_confirm(_source, _dest)
                self.assertEqual([], self._remote_leftovers())
            test.__name__ = 'test_%s_to_%s' % (source, dest)
            setattr(TestCloudSimulatedMoves, test.__name__, test)


_add_pair_tests()
