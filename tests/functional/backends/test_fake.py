"""The fake backend on its test bed: a temporary folder."""

import os

from nova import objects
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_utils import uuidutils
import pytest

from nova_xhv.backends.fake import backend as fake_backend
from tests.functional.backends import conformance

objects.register_all()


class FakeBed(conformance.TestBed):

    def __init__(self, folder):
        self.backend = fake_backend.FakeBackend(None)
        self.backend.init_host('fake-host')
        self.folder = os.path.join(folder, 'fake-host')
        self.switch = 'fake-switch'

    def new_instance(self):
        return objects.Instance(
            uuid=uuidutils.generate_uuid(), display_name='xhv-conformance',
            flavor=objects.Flavor(vcpus=1, memory_mb=128, root_gb=1,
                                  ephemeral_gb=0, swap=0))

    def leftovers(self, instance):
        return sorted(n for n in os.listdir(self.folder)
                      if instance.uuid in n)


@pytest.fixture
def bed(tmp_path):
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    fixture.config(group='xhv_fake', disk_dir=str(tmp_path / 'fake'))
    yield FakeBed(str(tmp_path / 'fake'))
    fixture.cleanUp()


class TestFakeConformance(conformance.BackendConformance):
    pass


def test_state_survives_a_restart(bed, tmp_path):
    # Honest state: a new backend on the same folder finds the guests.
    instance = conformance.BackendConformance()._guest(bed, tmp_path)
    bed.backend.power_off(instance)
    again = fake_backend.FakeBackend(None)
    again.init_host('fake-host')
    assert again.list_instance_uuids() == [instance.uuid]
    assert again.get_info(instance).state == \
        bed.backend.get_info(instance).state
