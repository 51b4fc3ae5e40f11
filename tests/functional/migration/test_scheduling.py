"""Scheduling of pinned images and host restrictions, with the real filters.

The scheduler runs Nova's default filters plus XHVMoveFilter and asks
placement for COMPUTE_IMAGE_TYPE_* traits, as a production XHV cloud
would.
"""

from nova_xhv.migration import exchange
from tests.fixtures import disks
from tests.functional.migration import base

FILTER = 'nova_xhv.scheduler.filters.XHVMoveFilter'


class SchedulingTestCase(base.CrossHypervisorTestCase):

    def setUp(self):
        # The scheduler starts in the harness's setUp and reads these then.
        self.flags(available_filters=['nova.scheduler.filters.all_filters',
                                      FILTER], group='filter_scheduler')
        self.flags(enabled_filters=self.default_filters() + ['XHVMoveFilter'],
                   group='filter_scheduler')
        self.flags(query_placement_for_image_type_support=True,
                   group='scheduler')
        super().setUp()

    @staticmethod
    def default_filters():
        from nova.conf import scheduler
        for opt in scheduler.filter_scheduler_opts:
            if opt.name == 'enabled_filters':
                return list(opt.default)
        raise AssertionError('no enabled_filters option')

    def pinned_image(self):
        image_id, raw = self.make_vmware_image({'hypervisor_type': 'vmware'})
        return image_id, raw

    def test_pinned_image_moves_to_kvm_but_new_boots_stay_on_vmware(self):
        self.start_vmware()
        self.start_kvm()
        self.assertIn('XHVMoveFilter', [
            type(f).__name__ for f in
            self.scheduler_service.manager.host_manager.enabled_filters])
        image_id, _raw = self.pinned_image()

        # A new boot lands on vSphere, and cannot be forced onto KVM.
        for _ in range(2):
            server = self._create_server(image_uuid=image_id,
                                         networks='none')
            self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
            self._delete_server(server)
        refused = self._create_server(image_uuid=image_id, networks='none',
                                      host=base.KVM, expected_state='ERROR')
        self.assertIn('No valid host', refused['fault']['message'])

        # The existing server moves to KVM (no host named: the scheduler
        # picks it) and boots there.
        server = self.boot_on(base.VMW, image_id)
        server = self._migrate_server(server)
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self._confirm_resize(server)

    def test_host_that_does_not_accept_vmware_is_not_picked(self):
        self.start_vmware()
        self.flags(accepted_source_families=['xen'], group='xhv')
        self.start_kvm()
        self.flags(accepted_source_families=[], group='xhv')
        image_id, _raw = self.make_vmware_image()
        server = self.boot_on(base.VMW, image_id)

        self.api.post_server_action(server['id'], {'migrate': None})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertEqual([], self.staged_leftovers(base.KVM))
        # Behind the scheduler, the endpoint refuses too.
        stager = self.computes[base.KVM].manager.driver.moves.stager
        error = self.assertRaises(
            exchange.ControlError, stager.stage_start,
            {'key': 'm1', 'instance_uuid': server['id'],
             'source_family': 'vmware', 'disks': [{}]})
        self.assertEqual(403, error.status)
        self.assertIn('accepted_source_families', str(error))


class WithoutFilterTestCase(base.CrossHypervisorTestCase):
    """Why the filter ships.

    The stock filters let a pinned boot reach KVM once KVM advertises what
    it takes through translation; only the XHV driver's policy backstop
    (the default rule xhv-new-boot-families) stops it there, after the
    scheduler chose the host.
    """

    def test_stock_filters_cannot_tell_a_boot_from_a_move(self):
        self.start_vmware()
        self.start_kvm()
        image_id, _raw = self.make_vmware_image({'hypervisor_type': 'vmware'})
        server = self._create_server(image_uuid=image_id, networks='none',
                                     host=base.KVM, expected_state='ERROR')
        # Refused where it landed: the fault names the rule and the host.
        self.assertIn('xhv-new-boot-families', server['fault']['message'])
        self.assertIn('host %s' % base.KVM, server['fault']['message'])
        self._delete_server(server)
