"""The Hyper-V backend on its test bed: the WinRM simulator over HTTPS with
NTLM, and the host's VM storage on a real Samba share."""

import pytest

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


@pytest.fixture
def bed(make_backend, hyperv_sim):  # noqa: F811
    return HyperVBed(make_backend(), hyperv_sim)


class TestHyperVConformance(conformance.BackendConformance):
    pass
