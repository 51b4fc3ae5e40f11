"""The cloud backend on its test bed: a second, real OpenStack cloud.

Keystone, Glance, Placement, Neutron and Nova (API, conductor,
scheduler, one compute on Nova's fake driver keeping disks as files)
from PyPI, started once for this module by tests/fixtures/remote_cloud.py.
The backend reaches it as project ``federation`` through an application
credential in a clouds.yaml entry, exactly as an operator configures it.
"""

import os

from nova.compute import power_state
from nova import context as nova_context
from nova import exception
from nova import objects
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_utils import uuidutils
import pytest

from nova_xhv.backends.cloud import backend as cloud_backend
from nova_xhv.backends.cloud import errors
from tests.fixtures import disks
from tests.fixtures import remote_cloud
from tests.functional.backends import conformance

objects.register_all()
pytestmark = pytest.mark.timeout(300)
MiB = disks.MiB


# Module scope: its ~750 MiB go as soon as this module is done.
@pytest.fixture(scope='module')
def remote():
    cloud = remote_cloud.RemoteCloud().start()
    cloud.make_network('xhv-conformance')
    cloud.make_network('xhv-conformance-101', vlan=101)
    yield cloud
    cloud.stop()


class CloudBed(conformance.TestBed):

    def __init__(self, remote, backend):
        self.remote = remote
        self.backend = backend
        self.context = nova_context.get_admin_context()
        self.admin = remote.admin()

    def new_instance(self, flavor=None):
        return objects.Instance(
            uuid=uuidutils.generate_uuid(), display_name='xhv-conformance',
            flavor=flavor or objects.Flavor(
                name='home.tiny', vcpus=1, memory_mb=256, root_gb=1,
                ephemeral_gb=0, swap=0))

    # Remote networks named as XHV's ML2 driver names the home segments
    # (the binding's cloud_network); made once per session.
    switch = 'home-switch'

    def leftovers(self, instance):
        """Remote servers and images of the federation project for it."""
        found = [s.name for s in self.admin.compute.servers(
            all_projects=True)
            if instance.uuid in (s.name or '')
            or (s.metadata or {}).get(cloud_backend.HOME_UUID) ==
            instance.uuid]
        found += ['image:%s' % i.name for i in self.admin.image.images()
                  if instance.uuid in (i.name or '') or any(
                      instance.uuid in t for t in (i.tags or []))]
        return sorted(found)


@pytest.fixture
def make_backend(remote, tmp_path):
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    fixture.config(group='xhv_cloud', cloud=remote_cloud.ENTRY,
                   clouds_yaml=remote.clouds_yaml,
                   staging_dir=str(tmp_path / 'staging'),
                   build_timeout=60)
    made = []

    def make(**options):
        if options:
            fixture.config(group='xhv_cloud', **options)
        backend = cloud_backend.CloudBackend(None)
        backend.init_host('xhv-cloud')
        made.append(backend)
        return backend
    yield make
    for backend in made:
        backend.cleanup_host('xhv-cloud')
    fixture.cleanUp()


@pytest.fixture
def bed(remote, make_backend):
    return CloudBed(remote, make_backend())


class TestCloudConformance(conformance.BackendConformance):

    def test_export_is_readable_and_never_changes_the_original(
            self, bed, tmp_path):
        # A remote server has its boot disk only (more would be remote
        # volumes, not done): the suite's two-disk guest is refused before
        # anything is made; the one-disk round trip is checked byte for
        # byte below.
        backend = bed.backend
        instance = bed.new_instance()
        folder = str(tmp_path / 'in')
        os.makedirs(folder)
        two = [bed.native_disk(folder, 'boot'),
               bed.extra_disk(folder, 'data')]
        with pytest.raises(cloud_backend.UnsupportedRequest):
            backend.check_stageable(bed.context, instance, two)
        with pytest.raises(cloud_backend.UnsupportedRequest):
            backend.stage_disks(bed.context, instance, two)
        assert bed.leftovers(instance) == []


def _raw_of(path, fmt, tmp_path):
    from nova_xhv import translate
    out = str(tmp_path / ('raw-%s' % os.path.basename(path)))
    translate.convert(path, out, to_format='raw', from_format=fmt)
    return disks.sha256_file(out)


def test_a_disk_goes_in_and_comes_back_byte_identical(bed, tmp_path):
    """stage -> spawn -> power off -> export (remote snapshot) -> read."""
    backend = bed.backend
    instance = bed.new_instance()
    folder = str(tmp_path / 'in')
    os.makedirs(folder)
    incoming = bed.native_disk(folder, 'boot', size=8 * MiB)
    expected = _raw_of(incoming.path, incoming.format, tmp_path)
    staged = backend.stage_disks(bed.context, instance, [incoming])
    try:
        backend.spawn_from_disks(bed.context, instance, staged, [],
                                 bed.image_meta(instance))
        # The staged image went once the remote compute had the disk.
        assert [n for n in bed.leftovers(instance)
                if n.startswith('image:')] == []
        backend.power_off(instance)
        exported = backend.export_disks(bed.context, instance)
        assert len(exported) == 1 and exported[0].boot_index == 0
        assert exported[0].virtual_size == 8 * MiB
        reader = backend.open_exported_disk(exported[0])
        path = str(tmp_path / 'exported')
        with open(path, 'wb') as f:
            # Ranged reads, as the exchange endpoint serves them.
            half = reader.size // 2
            for chunk in reader.iter_range(0, half - 1, 65536):
                f.write(chunk)
            for chunk in reader.iter_range(half, reader.size - 1, 65536):
                f.write(chunk)
        reader.close()
        assert _raw_of(path, exported[0].format, tmp_path) == expected
        backend.release_exported_disks(bed.context, instance, exported)
        backend.release_exported_disks(bed.context, instance, exported)
        # The original stays: powered off, whole, startable.
        assert backend.get_info(instance).state == power_state.SHUTDOWN
        backend.power_on(bed.context, instance, [])
        assert backend.get_info(instance).state == power_state.RUNNING
        assert [n for n in bed.leftovers(instance)
                if n.startswith('image:')] == []
    finally:
        bed.destroy(instance)
        backend.discard_staged_disks(bed.context, instance, staged)
    assert bed.leftovers(instance) == []


def test_capacity_is_the_remote_quota_less_foreign_usage(
        bed, remote, tmp_path):
    admin = bed.admin
    project = remote.project.id
    admin.set_compute_quotas(project, cores=6, ram=8192, instances=4)
    # A server XHV did not make, in the same project.
    user = remote_cloud.connect(**_user_auth(remote))
    foreign = user.compute.create_server(
        name='not-xhv', image_id=_any_image(bed, tmp_path).id,
        flavor_id=user.compute.find_flavor('r1.small').id, networks='none')
    user.compute.wait_for_server(foreign, wait=60)
    instance = conformance.BackendConformance()._guest(bed, tmp_path)
    try:
        cap = bed.backend.capacity()
        # total = quota; reserved = what the foreign server uses (1 core,
        # 2048 MiB), not ours; max_unit = the largest remote flavor.
        assert cap['VCPU'] == (6, 1, 2)
        assert cap['MEMORY_MB'] == (8192, 2048, 4096)
        assert cap['DISK_GB'][0] == 4 * 20
        assert bed.backend.traits() == ['CUSTOM_XHV_CLOUD_REMOTE',
                                        'CUSTOM_XHV_REGION_REGIONTWO']
    finally:
        bed.destroy(instance)
        user.compute.delete_server(foreign)
        user.compute.wait_for_delete(foreign, wait=60)
        admin.set_compute_quotas(project, cores=20, ram=51200, instances=10)


def _user_auth(remote):
    import yaml
    with open(remote.clouds_yaml) as f:
        entry = yaml.safe_load(f)['clouds'][remote_cloud.ENTRY]
    return dict(auth_type=entry['auth_type'], region_name=entry[
        'region_name'], **entry['auth'])


def _any_image(bed, tmp_path):
    """A small private image of the federation project."""
    raw = str(tmp_path / 'foreign.raw')
    disks.make_bootable_disk(raw, virtual_size=4 * MiB)
    user = remote_cloud.connect(**_user_auth(bed.remote))
    return user.image.create_image('foreign-%s' % os.path.basename(
        str(tmp_path)), filename=raw, disk_format='raw',
        container_format='bare', wait=True)


def test_a_remote_quota_refusal_makes_nova_reschedule(bed, remote,
                                                      tmp_path):
    admin = bed.admin
    admin.set_compute_quotas(remote.project.id, instances=0)
    try:
        with pytest.raises(exception.ComputeResourcesUnavailable) as raised:
            conformance.BackendConformance()._guest(bed, tmp_path)
        assert isinstance(raised.value, errors.RemoteQuotaExceeded)
        assert remote_cloud.ENTRY in str(raised.value)
        assert 'POST /servers' in str(raised.value)
        # Nothing is left of the refused build, not even the staged image.
        assert bed.leftovers(bed.last_instance) == []
    finally:
        admin.set_compute_quotas(remote.project.id, instances=10)


def test_no_remote_flavor_fits_makes_nova_reschedule(bed, tmp_path):
    big = objects.Flavor(name='home.huge', vcpus=64, memory_mb=1 << 20,
                         root_gb=1, ephemeral_gb=0, swap=0)
    instance = bed.new_instance(flavor=big)
    with pytest.raises(exception.ComputeResourcesUnavailable) as raised:
        bed.backend._flavor(instance)
    assert 'no remote flavor' in str(raised.value)


def test_flavor_by_map_name_and_smallest_fit(make_backend, bed):
    backend = make_backend(flavor_map={'home.gold': 'r1.medium'})
    assert backend._flavor(bed.new_instance(objects.Flavor(
        name='home.gold', vcpus=1, memory_mb=1, root_gb=0))).name == \
        'r1.medium'
    assert backend._flavor(bed.new_instance(objects.Flavor(
        name='r1.small', vcpus=1, memory_mb=1, root_gb=0))).name == \
        'r1.small'
    assert backend._flavor(bed.new_instance(objects.Flavor(
        name='home.mid', vcpus=1, memory_mb=1024, root_gb=5))).name == \
        'r1.small'


def test_a_remote_failure_is_mapped_naming_call_and_cloud(bed, tmp_path):
    backend = bed.backend
    instance = conformance.BackendConformance()._guest(bed, tmp_path)
    try:
        server = backend._find(instance)
        # Stopping a server that is not running: Nova answers 409.
        bed.admin.compute.stop_server(server)
        bed.admin.compute.wait_for_server(server, status='SHUTOFF', wait=60)
        with pytest.raises(errors.RemoteCloudError) as raised:
            with backend._call('POST /servers/%s/action os-stop'
                               % server.id):
                backend.conn.compute.stop_server(server)
        assert 'HTTP 409' in str(raised.value)
        assert remote_cloud.ENTRY in str(raised.value)
        assert 'os-stop' in str(raised.value)
    finally:
        bed.destroy(instance)


def test_unreachable_cloud_is_named(remote, tmp_path):
    bad = str(tmp_path / 'clouds.yaml')
    with open(remote.clouds_yaml) as f:
        text = f.read()
    with open(bad, 'w') as f:
        f.write(text.replace(remote.keystone, 'http://127.0.0.1:9/v3'))
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    try:
        fixture.config(group='xhv_cloud', cloud=remote_cloud.ENTRY,
                       clouds_yaml=bad, api_timeout=5,
                       staging_dir=str(tmp_path / 'staging'))
        with pytest.raises(errors.RemoteCloudUnreachable) as raised:
            cloud_backend.CloudBackend(None).init_host('xhv-cloud')
        assert remote_cloud.ENTRY in str(raised.value)
        # The secret never shows.
        assert 'application_credential_secret' not in str(raised.value)
    finally:
        fixture.cleanUp()


def test_an_entry_without_tls_verification_is_refused(remote, tmp_path):
    bad = str(tmp_path / 'clouds.yaml')
    with open(remote.clouds_yaml) as f:
        text = f.read()
    with open(bad, 'w') as f:
        f.write(text.replace('region_name:', 'verify: false\n    '
                                             'region_name:'))
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    try:
        fixture.config(group='xhv_cloud', cloud=remote_cloud.ENTRY,
                       clouds_yaml=bad,
                       staging_dir=str(tmp_path / 'staging'))
        with pytest.raises(errors.RemoteConfigError) as raised:
            cloud_backend.CloudBackend(None).init_host('xhv-cloud')
        assert 'verify' in str(raised.value)
    finally:
        fixture.cleanUp()


def test_console_log_and_list_instance_uuids(bed, tmp_path):
    instance = conformance.BackendConformance()._guest(bed, tmp_path)
    try:
        assert instance.uuid in bed.backend.list_instance_uuids()
        # Nova's fake driver answers its fixed console text.
        assert 'FAKE CONSOLE OUTPUT' in bed.backend.get_console_output(
            bed.context, instance)
    finally:
        bed.destroy(instance)


def test_spawn_uploads_a_home_image_once_and_translates_it(
        bed, remote, tmp_path):
    """spawn from the home Glance: translated, uploaded once, cached.

    The home Glance is played by the remote cloud's Glance in another
    project (admin's): Nova's image API reads it with admin's token.
    """
    admin = bed.admin
    raw = str(tmp_path / 'home.raw')
    disks.make_bootable_disk(raw, virtual_size=4 * MiB)
    expected = disks.sha256_file(raw)
    home = admin.image.create_image(
        'home-%s' % os.path.basename(str(tmp_path)), filename=raw,
        disk_format='raw', container_format='bare', wait=True)
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    fixture.config(group='glance', endpoint_override=remote.url['glance'])
    context = nova_context.RequestContext(
        user_id=admin.current_user_id, project_id=admin.current_project_id,
        auth_token=admin.auth_token, is_admin=True)
    meta = objects.ImageMeta.from_dict({
        'id': home.id, 'disk_format': 'raw', 'container_format': 'bare',
        'properties': {}})
    backend = bed.backend
    instances = [bed.new_instance(), bed.new_instance()]
    try:
        for instance in instances:
            backend.spawn(context, instance, meta, [], None, {})
            assert backend.get_info(instance).state == power_state.RUNNING
        cached = [i for i in admin.image.images()
                  if i.name == 'xhv-cache-%s' % home.id]
        # One remote copy for both, private, in the remote image format.
        assert len(cached) == 1
        assert cached[0].disk_format == 'qcow2'
        assert cached[0].visibility == 'private'
        assert cached[0].owner == remote.project.id
        # What the remote compute got is the home image, byte for byte.
        backend.power_off(instances[0])
        exported = backend.export_disks(bed.context, instances[0])
        reader = backend.open_exported_disk(exported[0])
        path = str(tmp_path / 'exported')
        with open(path, 'wb') as f:
            for chunk in reader.iter_range(0, reader.size - 1):
                f.write(chunk)
        backend.release_exported_disks(bed.context, instances[0], exported)
        assert _raw_of(path, 'qcow2', tmp_path) == expected
    finally:
        for instance in instances:
            bed.destroy(instance)
            assert bed.leftovers(instance) == []
        fixture.cleanUp()
        admin.image.delete_image(home)
        for image in admin.image.images():
            if image.name == 'xhv-cache-%s' % home.id:
                admin.image.delete_image(image)


def test_snapshot_goes_to_the_home_glance(bed, remote, tmp_path):
    """snapshot: a remote snapshot, read by range, uploaded home, dropped.

    The home Glance is played by the remote Glance in admin's project (as
    in the spawn test above).
    """
    admin = bed.admin
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    fixture.config(group='glance', endpoint_override=remote.url['glance'])
    context = nova_context.RequestContext(
        user_id=admin.current_user_id, project_id=admin.current_project_id,
        auth_token=admin.auth_token, is_admin=True)
    backend = bed.backend
    instance = bed.new_instance()
    folder = str(tmp_path / 'in')
    os.makedirs(folder)
    incoming = bed.native_disk(folder, 'boot', size=4 * MiB)
    expected = _raw_of(incoming.path, incoming.format, tmp_path)
    staged = backend.stage_disks(bed.context, instance, [incoming])
    home = admin.image.create_image(
        'home-snapshot-%s' % os.path.basename(str(tmp_path)),
        disk_format='qcow2',
        container_format='bare')
    states = []
    try:
        backend.spawn_from_disks(bed.context, instance, staged, [],
                                 bed.image_meta(instance))
        backend.snapshot(context, instance, home.id,
                         lambda **kw: states.append(kw['task_state']))
        assert states == ['image_pending_upload', 'image_uploading']
        image = admin.image.get_image(home.id)
        assert image.status == 'active' and image.disk_format == 'qcow2'
        path = str(tmp_path / 'home-copy')
        with open(path, 'wb') as f:
            f.write(admin.image.download_image(image).content)
        assert _raw_of(path, 'qcow2', tmp_path) == expected
        # The remote snapshot is gone; the server runs on.
        assert [n for n in bed.leftovers(instance)
                if n.startswith('image:')] == []
        assert backend.get_info(instance).state == power_state.RUNNING
    finally:
        bed.destroy(instance)
        backend.discard_staged_disks(bed.context, instance, staged)
        admin.image.delete_image(home, ignore_missing=True)
        fixture.cleanUp()
    assert bed.leftovers(instance) == []


def _addressed(vif, *addresses):
    """``vif`` as Nova's network_info has it with these fixed IPs."""
    return dict(vif, network={'subnets': [
        {'ips': [{'address': a} for a in addresses]}]})


def test_remote_ports_keep_the_home_fixed_ips_where_they_can(
        bed, remote, tmp_path, caplog):
    """Same MAC and IP where a remote subnet holds the address.

    Else the remote Neutron's address, logged: outside every subnet, or
    in use.
    """
    admin = bed.admin
    flat = admin.network.find_network('xhv-conformance')
    blocker = admin.network.create_port(
        network_id=flat.id, project_id=remote.project.id,
        fixed_ips=[{'ip_address': '10.0.0.50'}])
    vifs = [_addressed(bed.vif(1, vlan=101), '10.101.1.23'),
            _addressed(bed.vif(2), '192.0.2.9'),
            _addressed(bed.vif(3), '10.0.0.50'),
            _addressed(bed.vif(4), '10.0.0.51')]
    instance = None
    try:
        instance = conformance.BackendConformance()._guest(
            bed, tmp_path, power_on=False, network_info=vifs)
        found = bed.backend.ports.addresses(instance)
        assert [(home, mac) for home, mac, _ in found] == [
            (v['id'], v['address']) for v in vifs]
        ips = [addresses for _, _, addresses in found]
        assert ips[0] == ['10.101.1.23']
        assert ips[3] == ['10.0.0.51']
        for chosen in (ips[1], ips[2]):
            assert len(chosen) == 1 and chosen[0].startswith('10.0.0.')
            assert chosen[0] not in ('10.0.0.50', '10.0.0.51')
        log = caplog.text
        assert '192.0.2.9, outside every subnet' in log
        assert 'refused fixed IPs 10.0.0.50 for home port %s' % (
            vifs[2]['id']) in log
        assert 'already allocated' in log
    finally:
        if instance is not None:
            bed.destroy(instance)
            assert bed.leftovers(instance) == []
            assert list(admin.network.ports(
                description='xhv-instance:%s' % instance.uuid)) == []
        admin.network.delete_port(blocker)


def test_a_remote_policy_refusing_ips_and_macs_falls_back(
        bed, remote, tmp_path, caplog):
    """The remote project may set neither: the port gets Neutron's own."""
    policy = os.path.join(remote.neutron.state, 'policy.yaml')
    with open(policy) as f:
        before = f.read()
    vifs = [_addressed(bed.vif(1), '10.0.0.61')]
    instance = None
    try:
        with open(policy, 'w') as f:
            f.write(before + '"create_port:fixed_ips:ip_address": "!"\n'
                    '"create_port:mac_address": "!"\n')
        instance = conformance.BackendConformance()._guest(
            bed, tmp_path, power_on=False, network_info=vifs)
        [(home, mac, ips)] = bed.backend.ports.addresses(instance)
        assert home == vifs[0]['id']
        assert mac != vifs[0]['address']
        assert ips != ['10.0.0.61'] and ips[0].startswith('10.0.0.')
        log = caplog.text
        assert 'refused fixed IPs 10.0.0.61' in log
        assert 'refused MAC %s' % vifs[0]['address'] in log
        assert 'disallowed by policy' in log
    finally:
        with open(policy, 'w') as f:
            f.write(before)
        if instance is not None:
            bed.destroy(instance)
            assert bed.leftovers(instance) == []


def test_vmdk_images_are_streamed_into_the_remote_glance(
        remote, make_backend, tmp_path):
    """``image_format = vmdk``: a move's disk goes up as it is translated.

    The conformance check of streamed disks: the stream becomes a private
    remote image the remote compute boots, byte for byte the guest's
    data; a stream cut half-way leaves no remote image.
    """
    backend = make_backend(image_format='vmdk')
    assert backend.accepts_disk_streams()
    assert (backend.native_format, backend.native_subformat) == (
        'vmdk', 'streamOptimized')
    bed = CloudBed(remote, backend)
    conformance.BackendConformance(
    ).test_streamed_disks_spawn_and_a_cut_stream_leaves_nothing(
        bed, tmp_path)
    # And the data: staged, booted, exported back, compared.
    raw = str(tmp_path / 'data.raw')
    disks.make_bootable_disk(raw, virtual_size=8 * MiB)
    instance = bed.new_instance()
    staged, _ = conformance.BackendConformance()._streamed(bed, instance,
                                                           raw)
    try:
        backend.spawn_from_disks(bed.context, instance, staged, [],
                                 bed.image_meta(instance),
                                 power_on=False)
        exported = backend.export_disks(bed.context, instance)
        path = str(tmp_path / 'exported')
        reader = backend.open_exported_disk(exported[0])
        with open(path, 'wb') as f:
            for chunk in reader.iter_range(0, reader.size - 1):
                f.write(chunk)
        backend.release_exported_disks(bed.context, instance, exported)
        assert _raw_of(path, 'vmdk', tmp_path) == _raw_of(raw, 'raw',
                                                          tmp_path)
    finally:
        bed.destroy(instance)
        backend.discard_staged_disks(bed.context, instance, staged)
    assert bed.leftovers(instance) == []
