"""Switch a KVM compute with a running server from the stock libvirt driver
to xhv.XHVDriver and back: node, hypervisor type and guest stay.
"""

from nova.virt import event as virtevent

from nova_xhv import driver as xhv_driver
from tests.fixtures import disks
from tests.functional.libvirt import test_lifecycle
from tests.functional import nova_base


class TestSwitchDriver(nova_base.LibvirtFunctionalTestCase):

    def _snapshot(self, server):
        node = self.compute_node('host1')
        return {'node_uuid': node['id'],
                'hypervisor_type': node['hypervisor_type'],
                'hypervisor_hostname': node['hypervisor_hostname'],
                'qemu_domain_id': nova_base.virsh(
                    'domid', server['id']).strip(),
                'status': self._show_server_admin(server)['status']}

    def test_switch_to_xhv_and_back_keeps_node_and_guest(self):
        self.start_compute('host1',
                           compute_driver=nova_base.STOCK_LIBVIRT_DRIVER)
        image_id = test_lifecycle.upload_bootable_image(self, 'raw')
        server = self._create_server(image_uuid=image_id, networks='none')
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        before = self._snapshot(server)
        self.assertEqual('QEMU', before['hypervisor_type'])

        compute = self.restart_compute('host1', nova_base.XHV_DRIVER)
        self.assertIsInstance(compute.manager.driver, xhv_driver.XHVDriver)
        self.assertEqual(before, self._snapshot(server))
        self.assertEqual(1, len(self.admin_api.api_get(
            '/os-hypervisors/detail').body['hypervisors']))

        # The compute manager's event listener reaches the stock driver:
        # a guest that stops behind Nova's back is synced to SHUTOFF when
        # libvirt's lifecycle event arrives.
        stock = compute.manager.driver.backend.stock_driver
        self.assertEqual(compute.manager.handle_events,
                         stock._compute_event_callback)
        nova_base.virsh('destroy', server['id'])
        stock.emit_event(virtevent.LifecycleEvent(
            server['id'], virtevent.EVENT_LIFECYCLE_STOPPED))
        server = self._wait_for_state_change(server, 'SHUTOFF')
        server = self._start_server(server)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        during = self._snapshot(server)

        self.restart_compute('host1', nova_base.STOCK_LIBVIRT_DRIVER)
        self.assertEqual(during, self._snapshot(server))
        self.assertEqual(before['node_uuid'], during['node_uuid'])
        self._delete_server(server)
        self.assert_guest_gone(server)
