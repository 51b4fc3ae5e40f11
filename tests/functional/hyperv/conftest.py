"""Fixtures for the Hyper-V backend tests against the simulator."""

from nova import objects
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_utils import uuidutils
import pytest

from nova_xhv.backends.hyperv import backend as hyperv_backend
from tests.fixtures.hyperv import hyperv_sim  # noqa: F401  (pytest fixture)

objects.register_all()
PHYSNET = 'physnet1'


def configure(conf, info, staging_dir, **overrides):
    options = dict(
        host=info.host, port=info.port, use_https=info.scheme == 'https',
        transport='ntlm', username=info.username, password=info.password,
        ca_file=info.ca_file, vm_path=info.storage_path,
        smb_share=info.share, smb_port=info.smb_port,
        vswitch_mappings=['%s:%s' % (PHYSNET, info.switches[0])],
        staging_dir=staging_dir, operation_timeout=30,
        volume_shares=['127.0.0.1:%s=%s' % (info.volume_dir,
                                            info.volume_unc)])
    options.update(overrides)
    for name, value in options.items():
        conf.config(group='xhv_hyperv', **{name: value})


@pytest.fixture
def conf():
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    yield fixture
    fixture.cleanUp()


@pytest.fixture
def make_backend(conf, hyperv_sim, tmp_path):  # noqa: F811
    """Build (and start) backends against a simulator (default: shared)."""
    built = []

    def make(start=True, sim=None, **overrides):
        configure(conf, (sim or hyperv_sim).info, str(tmp_path / 'staging'),
                  **overrides)
        backend = hyperv_backend.HyperVBackend(None)
        # Nova's compute_id file is nova-compute's (its config and
        # state_path): one uuid per test here.
        node = uuidutils.generate_uuid()
        backend.node_uuid = lambda: node
        built.append(backend)
        if start:
            backend.init_host('xhv-test-host')
        return backend

    yield make
    for backend in built:
        backend.cleanup_host('xhv-test-host')


def make_instance(name='xhv-test', vcpus=1, memory_mb=128):
    return objects.Instance(
        uuid=uuidutils.generate_uuid(), display_name=name,
        flavor=objects.Flavor(vcpus=vcpus, memory_mb=memory_mb, root_gb=1,
                              ephemeral_gb=0, swap=0))
