"""Fixtures for the vSphere backend tests against vcsim."""

import os
import ssl

from nova import objects
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_utils import uuidutils
import pytest
from pyVim import connect

from nova_xhv.backends.vmware import backend as vmware_backend
from nova_xhv import translate
from tests.fixtures import disks
from tests.fixtures.vcsim import vcsim  # noqa: F401  (pytest fixture)

objects.register_all()


@pytest.fixture
def conf():
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    yield fixture
    fixture.cleanUp()


def configure(conf, info, staging_dir, **overrides):
    options = dict(host=info.host, port=info.port, username=info.username,
                   password=info.password, ca_file=info.ca_file,
                   cluster_name=info.cluster, staging_dir=staging_dir,
                   connection_retries=0, retry_interval=0.1)
    options.update(overrides)
    for name, value in options.items():
        conf.config(group='xhv_vmware', **{name: value})


@pytest.fixture
def make_backend(conf, vcsim, tmp_path):  # noqa: F811
    """Build (and start) backends against the session's vcsim."""
    built = []

    def make(start=True, **overrides):
        configure(conf, vcsim, str(tmp_path / 'staging'), **overrides)
        backend = vmware_backend.VMwareBackend(None)
        if start:
            backend.init_host('xhv-test-host')
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.cleanup_host('xhv-test-host')


@pytest.fixture
def admin_si(vcsim):  # noqa: F811
    """An independent pyvmomi session to check what the backend did."""
    si = connect.SmartConnect(
        host=vcsim.host, port=vcsim.port, user=vcsim.username,
        pwd=vcsim.password,
        sslContext=ssl.create_default_context(cafile=vcsim.ca_file))
    yield si
    connect.Disconnect(si)


def make_instance(name='xhv-test', vcpus=1, memory_mb=128):
    return objects.Instance(
        uuid=uuidutils.generate_uuid(), display_name=name,
        flavor=objects.Flavor(vcpus=vcpus, memory_mb=memory_mb, root_gb=1,
                              ephemeral_gb=0, swap=0))


@pytest.fixture
def guest_disk(tmp_path):
    """A bootable raw disk and its streamOptimized vmdk (by the engine)."""
    raw = str(tmp_path / 'guest.raw')
    extents = disks.make_bootable_disk(raw, virtual_size=8 * disks.MiB)
    vmdk = str(tmp_path / 'guest.vmdk')
    translate.convert(raw, vmdk, to_format='vmdk', from_format='raw',
                      subformat='streamOptimized')
    return {'raw': raw, 'vmdk': vmdk, 'extents': extents,
            'size': os.path.getsize(raw)}
