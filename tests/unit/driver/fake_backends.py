"""Backends for the loading tests, registered as fake entry points."""

from nova_xhv.backends import base


class RecordingBackend(base.Backend):
    """A backend that serves nothing but records how it was built."""

    family = 'test'
    native_format = 'raw'
    capabilities = {'supports_image_type_raw': True,
                    'supports_evacuate': True}
    rebalances_nodes = True

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.read_only = read_only
        self.init_host_error = None

    def init_host(self, host):
        if self.init_host_error:
            raise self.init_host_error
        return 'ready on %s' % host

    def export_disks(self, context, instance, block_device_info=None):
        return []

    def stage_disks(self, context, instance, disks):
        return disks

    def discard_staged_disks(self, context, instance, disks):
        pass

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        pass


class NotABackend(object):
    def __init__(self, virtapi, read_only=False):
        pass


class BrokenBackend(RecordingBackend):
    def __init__(self, virtapi, read_only=False):
        raise RuntimeError('cannot parse [xhv_test] endpoint')
