"""Nova's functional harness talking to real Cinder services.

``RealCinderMixin`` goes before a backend's test base in the class
bases: it starts cinder-api, cinder-scheduler and cinder-volume in a
child process (tests/fixtures/cinder_services.py), keeps Nova's
CinderFixture out and points Nova's volume API at the real one.  Tests
use the admin API (Cinder's noauth maps Nova's user and project 1:1).
"""

import fixtures

from tests.fixtures import cinder_services


class RealCinderMixin(object):

    def setUp(self):
        self.cinder_services = self.useFixture(
            cinder_services.CinderServices())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.CinderFixture',
            cinder_services.NoCinderFixture))
        super().setUp()
        self.useFixture(cinder_services.NovaUsesCinder(
            self, self.cinder_services))
        self.api = self.admin_api

    def server_volumes(self, server):
        return sorted(a['volumeId'] for a in self.api.get_server_volumes(
            server['id']))

    def attach(self, server, volume_id):
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume_id}})
        return self.cinder_services.wait_volume(volume_id, 'in-use')

    def detach(self, server, volume_id):
        self.api.delete_server_volume(server['id'], volume_id)
        return self.cinder_services.wait_volume(volume_id, 'available')

    def boot_volume(self, volume_id, name='bfv', host=None):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=0,
                                     ephemeral=0)
        body = {'server': {
            'name': name, 'flavorRef': flavor, 'networks': 'none',
            'block_device_mapping_v2': [{
                'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
                'destination_type': 'volume'}]}}
        if host:
            body['server']['host'] = host
        server = self.api.post_server(body)
        return self._wait_for_state_change(server, 'ACTIVE')

    def bootable_volume(self, size=1, volume_type='nfsraw'):
        """(volume holding the tiny bootable test disk, its extents)."""
        from tests.fixtures import disks

        cinder = self.cinder_services
        volume = cinder.create_volume(size=size, volume_type=volume_type)
        path = cinder.volume_file(volume['id'])
        extents = disks.make_bootable_disk(path,
                                           virtual_size=size * 1024 ** 3)
        cinder.set_bootable(volume['id'])
        return volume, extents
