"""The Hyper-V backend on its test bed: the WinRM simulator over HTTPS with
NTLM, and the host's VM storage on a real Samba share."""

import os
import uuid

import pytest

from nova_xhv.backends.hyperv import volumes

from tests.fixtures.hyperv import hyperv_sim  # noqa: F401  (pytest fixture)
from tests.functional.backends import conformance
from tests.functional.hyperv.conftest import conf  # noqa: F401
from tests.functional.hyperv.conftest import make_backend  # noqa: F401
from tests.functional.hyperv.conftest import make_instance

pytestmark = pytest.mark.timeout(180)


class HyperVBed(conformance.TestBed):

    # The vSwitch XHV's ML2 driver would name (network contract).
    switch = 'xhv-external'

    def __init__(self, backend, sim):
        self.backend = backend
        self.sim = sim

    def new_instance(self):
        return make_instance()

    def leftovers(self, instance):
        found = sorted(name for name in self.sim.vms()
                       if instance.uuid in name)
        return found + [f for f in self.sim.storage_files()
                        if instance.uuid in f]

    def nfs_export(self, tmp_path):
        # A folder of the export Samba also shares (a dual-protocol
        # filer): 127.0.0.1:<volume_dir>/<sub> is the share's <sub>.
        export = os.path.join(self.sim.info.volume_dir,
                              'export-%s' % uuid.uuid4().hex[:12])
        os.mkdir(export)
        os.chmod(export, 0o777)
        return export

    def attached_volume_files(self, instance):
        vms = [vm for vm in self.sim.state()['vms']
               if vm['Name'] == instance.uuid]
        return [d['Path'].rsplit('\\', 1)[1][:-len(volumes.LINK_SUFFIX)]
                for vm in vms for d in vm['HardDrives']
                if d['Path'].startswith('\\\\')]


@pytest.fixture
def bed(make_backend, hyperv_sim):  # noqa: F811
    return HyperVBed(make_backend(), hyperv_sim)


class TestHyperVConformance(conformance.BackendConformance):
    pass
