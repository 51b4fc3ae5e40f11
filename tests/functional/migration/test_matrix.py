"""Moves between every ordered pair of installed families, through Nova.

Each family joins the matrix with its test bed (``FAMILY_BEDS``): how to
start its compute, which Glance image it boots, and where its guest's disk
is.  Each pair moves a server, reverts (the untouched original runs again
on the source), moves it again and confirms (the original is gone).  Power
states and guests are read through each compute's own driver, so the
checks are the same for every family.
"""

import collections

from nova.compute import power_state
from nova import exception

from nova_xhv.backends import family
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional.migration import xen_bed

Bed = collections.namedtuple('Bed', 'host start make_image guest_disk')

FAMILY_BEDS = {
    'kvm': Bed(base.KVM, base.CrossHypervisorTestCase.start_kvm,
               base.CrossHypervisorTestCase.make_kvm_image,
               lambda tc, server: (tc.kvm_disk(server), 'qcow2')),
    'vmware': Bed(base.VMW, base.CrossHypervisorTestCase.start_vmware,
                  base.CrossHypervisorTestCase.make_vmware_image,
                  lambda tc, server: (tc.guest_disk_file(server), 'vmdk')),
    'xen': Bed(xen_bed.XEN, xen_bed.start_xen, xen_bed.make_xen_image,
               xen_bed.guest_disk),
    'fake': Bed(base.FAKE, base.CrossHypervisorTestCase.start_fake,
                lambda tc: tc.make_image('qcow2', name='fake-guest'),
                lambda tc, server: (tc.fake_disk(server), 'vhdx')),
    'hyperv': Bed(base.HYPERV, base.CrossHypervisorTestCase.start_hyperv,
                  lambda tc: tc.make_image('vhdx', name='hyperv-guest'),
                  lambda tc, server: (tc.hyperv_disk(server), 'vhdx')),
}


def _pairs():
    installed = sorted(set(family.families()) & set(FAMILY_BEDS))
    return [(a, b) for a in installed for b in installed if a != b]


class MoveChecks(object):
    """The pair checks; a harness test case mixes it in with its beds."""

    beds = FAMILY_BEDS

    def _driver(self, host):
        return self.computes[host].manager.driver

    def _state(self, host, server):
        try:
            return self._driver(host).get_info(self.instance(server)).state
        except exception.InstanceNotFound:
            return None

    def _has_guest(self, host, server):
        return server['id'] in self._driver(host).list_instance_uuids()

    def _move_revert_move_confirm(self, source, dest):
        src, dst = self.beds[source], self.beds[dest]
        src.start(self)
        dst.start(self)
        image_id, raw = src.make_image(self)
        server = self.boot_on(src.host, image_id)
        self.assertEqual(power_state.RUNNING, self._state(src.host, server))
        original, original_format = src.guest_disk(self, server)
        before = disks.sha256_file(original)

        # Move, then revert: the untouched original runs again.
        server = self._migrate_server(server, host=dst.host)
        self.assertEqual(dst.host, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(power_state.RUNNING, self._state(dst.host, server))
        self.assertEqual(power_state.SHUTDOWN, self._state(src.host, server))
        copy, copy_format = dst.guest_disk(self, server)
        self.assertTrue(base.same_guest_data(copy, copy_format, raw, 'raw'))
        if dest == 'kvm':
            # The only family here that runs the guest: it boots.
            self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(src.host, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(power_state.RUNNING, self._state(src.host, server))
        self.assertFalse(self._has_guest(dst.host, server))
        self.assertEqual(before, disks.sha256_file(original))
        self.assertNotIn('xhv_hw_original',
                         self.instance(server).system_metadata)

        # Move again, then confirm: the original is gone.
        server = self._migrate_server(server, host=dst.host)
        self._confirm_resize(server)
        if dest == 'kvm':
            self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self.assertFalse(self._has_guest(src.host, server))
        self.assertEqual(power_state.RUNNING, self._state(dst.host, server))
        copy, copy_format = dst.guest_disk(self, server)
        self.assertTrue(base.same_guest_data(copy, copy_format, raw, 'raw'))
        for host in (src.host, dst.host):
            self.assertEqual([], self.staged_leftovers(host))
        self._delete_server(server)
        self.assertFalse(self._has_guest(dst.host, server))


class TestMoveMatrix(MoveChecks, base.CrossHypervisorTestCase):
    pass


def _add_pair_tests():
    for source, dest in _pairs():
        def test(self, _source=source, _dest=dest):
            self._move_revert_move_confirm(_source, _dest)
        test.__name__ = 'test_%s_to_%s' % (source, dest)
        setattr(TestMoveMatrix, test.__name__, test)


_add_pair_tests()
