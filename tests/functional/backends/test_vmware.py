"""The vSphere backend on its test bed: vcsim (patched build), over TLS."""

import os

import pytest

from nova_xhv.backends.vmware import volumes
from tests.fixtures.vcsim import vcsim  # noqa: F401
from tests.functional.backends import conformance
from tests.functional.vmware import conftest as vmware_bed
from tests.functional.vmware.conftest import admin_si  # noqa: F401
from tests.functional.vmware.conftest import conf  # noqa: F401
from tests.functional.vmware.conftest import make_backend  # noqa: F401

pytestmark = pytest.mark.timeout(180)


class VMwareBed(conformance.TestBed):

    def __init__(self, backend, si, vcsim_info):
        self.backend = backend
        self.si = si
        self.vcsim = vcsim_info
        self.switch = 'DVS0'  # vcsim's distributed switch

    def new_instance(self):
        return vmware_bed.make_instance()

    def leftovers(self, instance):
        view = self.si.content.viewManager.CreateContainerView(
            self.si.content.rootFolder,
            [vmware_bed.vmware_backend.vim.VirtualMachine], True)
        try:
            found = sorted(vm.name for vm in view.view
                           if instance.uuid in vm.name)
        finally:
            view.Destroy()
        folder = os.path.join(self.vcsim.datastore_dir(), instance.uuid)
        if os.path.isdir(folder):
            found += sorted(os.listdir(folder))
        return found

    def nfs_export(self, tmp_path):
        # vcsim (patch 5) serves an export of this machine as the NAS
        # datastore an ESXi host would mount.
        export = tmp_path / 'nfs-export'
        export.mkdir()
        os.chmod(str(export), 0o777)
        return str(export)

    def attached_volume_files(self, instance):
        vm = self.si.content.searchIndex.FindByUuid(None, instance.uuid,
                                                    True, True)
        found = []
        for device in vm.config.hardware.device:
            if volumes.is_volume_disk(device):
                name = device.backing.fileName.split('] ', 1)[1]
                found.append(name[:-len(volumes.DESCRIPTOR_SUFFIX)])
        return found


@pytest.fixture
def bed(make_backend, admin_si, vcsim):  # noqa: F811
    return VMwareBed(make_backend(create_port_groups=True), admin_si, vcsim)


class TestVMwareConformance(conformance.BackendConformance):
    pass
