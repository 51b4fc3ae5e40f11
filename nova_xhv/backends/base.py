"""The backend contract: what XHV needs from one hypervisor.

A backend is a Nova ``ComputeDriver`` for one hypervisor family plus the
disk exchange that cross-hypervisor moves need.  ``XHVDriver`` forwards
every ComputeDriver call to the backend; the cross-hypervisor story
(export -> transfer -> translate -> import) lives in XHVDriver and
``nova_xhv.migration``, never in a backend.

Backends must serve at least the calls Nova needs to run a compute and move
a server (see shared notes nova-driver.md): init_host, get_available_nodes,
get_available_resource, update_provider_tree, list_instance_uuids,
list_instances, spawn, get_info, destroy, power_off, power_on, reboot,
get_host_ip_addr, snapshot, plus the exchange methods below.  Calls a
backend does not support keep ComputeDriver's NotImplementedError, which
Nova already handles.
"""

import abc

from nova.virt import driver

from nova_xhv import disk as xhv_disk


class Backend(driver.ComputeDriver, metaclass=abc.ABCMeta):
    """One hypervisor behind XHV.

    Subclasses set the class attributes and implement the exchange methods.
    They are built as ``Backend(virtapi, read_only=False)``, exactly like a
    Nova compute driver.
    """

    #: XHV's name for the hypervisor family: kvm, vmware, hyperv or xen.
    family = None
    #: Canonical format (see nova_xhv.translate.formats) and subformat the
    #: hypervisor stores disks in; imports are translated to it.
    native_format = None
    native_subformat = None

    @abc.abstractmethod
    def export_disks(self, context, instance, block_device_info=None):
        """Describe the disks of a powered-off instance for a move.

        :returns: list of nova_xhv.disk.DiskDescriptor, boot disk first.
            Each disk is readable through ``open_exported_disk`` (never
            modified) until ``release_exported_disks``: a local ``path``
            (the live disk file when storage is local, or a copy), or a
            backend-specific ``url`` where the disk is stored.
        """

    def open_exported_disk(self, disk):
        """A nova_xhv.disk.DiskReader over one disk from ``export_disks``.

        The exchange endpoint serves the disk through it.  Default: the
        descriptor's local ``path``; backends that export disks where they
        are stored (``url`` set, e.g. a datastore file) override this.
        """
        if disk.path is None:
            raise ValueError('the %s backend exported %s without a local '
                             'path and cannot open it' % (self.family,
                                                          disk.url))
        return xhv_disk.LocalFileReader(disk.path)

    def release_exported_disks(self, context, instance, disks):
        """Drop whatever ``export_disks`` made (copies, leases, tokens).

        Never touches the instance's own disks.  Default: nothing to drop.
        """

    def check_stageable(self, context, instance, disks):
        """Raise now if ``stage_disks`` would refuse these disks.

        Called with the source's descriptors before any data is pulled, so
        that a move that cannot land fails (and rolls back) at once.
        Default: every disk can be staged.
        """

    @abc.abstractmethod
    def stage_disks(self, context, instance, disks):
        """Place native-format disks in the hypervisor's storage.

        The disks are attached to nothing yet.

        :param disks: DiskDescriptors with local ``path`` in native format;
            the backend may move (rename) these files instead of copying.
        :returns: DiskDescriptors for the staged disks (``handle`` set to
            what ``spawn_from_disks`` and ``discard_staged_disks`` need).
        """

    @abc.abstractmethod
    def discard_staged_disks(self, context, instance, disks):
        """Remove disks made by ``stage_disks``; idempotent."""

    @abc.abstractmethod
    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        """Create the instance on this hypervisor from staged disks.

        :param hardware: hardware choices (disk bus, NIC model, firmware)
            mapped for this hypervisor; None means the backend's defaults.
        """

    def import_disks(self, context, instance, disks, network_info,
                     image_meta, block_device_info=None, hardware=None,
                     power_on=True):
        """Stage native-format disks and create the instance from them."""
        staged = self.stage_disks(context, instance, disks)
        try:
            self.spawn_from_disks(context, instance, staged, network_info,
                                  image_meta, block_device_info,
                                  hardware=hardware, power_on=power_on)
        except Exception:
            self.discard_staged_disks(context, instance, staged)
            raise
        return staged
