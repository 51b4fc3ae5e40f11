"""XHV's vSphere backend driven directly against vcsim (patched build).

Every test talks to a real vcsim process over TLS verified against the
fixture's CA; nothing is mocked.
"""

import glob
import http.client
import os
import socket
import ssl

from nova.compute import power_state
from nova.compute import provider_tree
from nova import exception
import os_resource_classes as orc
import pytest
from pyVmomi import vim
from pyVmomi import vmodl

from nova_xhv.backends.vmware import backend as vmware_backend
from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import session as vsession
from nova_xhv.backends.vmware import vm as vmops
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate
from tests.fixtures import disks
from tests.fixtures.vcsim import VcsimServer
from tests.functional.vmware.conftest import configure
from tests.functional.vmware.conftest import make_instance

pytestmark = pytest.mark.timeout(120)


def _vm_by_uuid(si, uuid):
    return si.content.searchIndex.FindByUuid(None, uuid, True, True)


def _stage_and_spawn(backend, instance, guest_disk, power_on=True):
    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=guest_disk['size'], path=guest_disk['vmdk'])])
    backend.spawn_from_disks(None, instance, staged, [], None,
                             power_on=power_on)
    return staged


# -- session, TLS and start-up errors -------------------------------------

def _read_export(backend, disk, folder, name='export'):
    """Copy an exported disk through the reader the exchange serves."""
    local = os.path.join(str(folder), name)
    reader = backend.open_exported_disk(disk)
    try:
        with open(local, 'wb') as f:
            for chunk in reader.iter_range(0, reader.size - 1, 65536):
                f.write(chunk)
    finally:
        reader.close()
    return local


def test_tls_is_verified_against_the_fixture_ca(vcsim):
    session = vsession.VSphereSession(
        vcsim.host, vcsim.port, vcsim.username, vcsim.password,
        ca_file=vcsim.ca_file, retries=0)
    session.connect()
    try:
        assert session.ssl_context().verify_mode == ssl.CERT_REQUIRED
        assert session.content.about.apiType == 'VirtualCenter'
    finally:
        session.disconnect()
    # Without the CA the system trust store refuses the throwaway cert.
    untrusted = vsession.VSphereSession(
        vcsim.host, vcsim.port, vcsim.username, vcsim.password, retries=0)
    with pytest.raises(errors.VSphereConnectionError) as caught:
        untrusted.connect()
    assert 'ca_file' in str(caught.value)
    assert 'certificate verif' in str(caught.value)


def test_insecure_skips_verification(make_backend):
    # The only test that turns verification off.
    backend = make_backend(ca_file=None, insecure=True)
    assert backend._session.ssl_context().verify_mode == ssl.CERT_NONE
    assert backend.get_available_nodes()


def test_bad_credentials_fail_at_init_host(make_backend):
    backend = make_backend(start=False, password='wrong')
    with pytest.raises(errors.VSphereConnectionError) as caught:
        backend.init_host('h')
    message = str(caught.value)
    assert 'InvalidLogin' in message and 'username and password' in message
    assert 'wrong' not in message  # the password is never echoed


def test_unreachable_vcenter_fails_at_init_host(make_backend):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    backend = make_backend(start=False, port=port, connection_retries=1,
                           retry_interval=0.01)
    with pytest.raises(errors.VSphereConnectionError) as caught:
        backend.init_host('h')
    message = str(caught.value)
    assert '127.0.0.1:%d' % port in message
    assert 'host and port' in message and '2 attempt(s)' in message


def test_missing_cluster_fails_at_init_host(make_backend):
    backend = make_backend(start=False, cluster_name='no-such-cluster')
    with pytest.raises(errors.VSphereConfigError) as caught:
        backend.init_host('h')
    message = str(caught.value)
    assert "'no-such-cluster' not found" in message and 'DC0_C0' in message


def test_datastore_regex_matching_nothing_fails_at_init_host(make_backend):
    backend = make_backend(start=False, datastore_regex='nfs-')
    with pytest.raises(errors.VSphereConfigError) as caught:
        backend.init_host('h')
    assert "datastore_regex 'nfs-'" in str(caught.value)


def test_invalid_datastore_regex_is_named(make_backend):
    with pytest.raises(errors.VSphereConfigError) as caught:
        make_backend(start=False, datastore_regex='(unclosed')
    assert "datastore_regex '(unclosed' is not a valid" in str(caught.value)


def test_standalone_esxi_host_without_cluster_name(conf, tmp_path):
    server = VcsimServer(model='esx', vms=1)
    info = server.start()
    try:
        configure(conf, info, str(tmp_path), cluster_name=None)
        backend = vmware_backend.VMwareBackend(None)
        backend.init_host('h')
        assert not backend._compute.is_cluster
        resources = backend.get_available_resource(
            backend.get_available_nodes()[0])
        assert resources['vcpus'] > 0 and resources['local_gb'] > 0
        assert backend.list_instance_uuids() == []  # its VM is not Nova's
        backend.cleanup_host('h')
    finally:
        server.stop()


def test_relogin_after_the_session_is_terminated(make_backend, admin_si):
    backend = make_backend()
    key = backend._session.content.sessionManager.currentSession.key
    admin_si.content.sessionManager.TerminateSession([key])
    # The next call meets NotAuthenticated, logs in again and succeeds.
    assert backend.list_instance_uuids() == []
    new_key = backend._session.content.sessionManager.currentSession.key
    assert new_key != key


# -- inventory ------------------------------------------------------------

def test_resources_and_provider_tree_match_the_cluster(make_backend,
                                                       admin_si):
    backend = make_backend()
    node = backend.get_available_nodes()[0]
    view = admin_si.content.viewManager.CreateContainerView(
        admin_si.content.rootFolder, [vim.ClusterComputeResource], True)
    cluster = [c for c in view.view if c.name == 'DC0_C0'][0]
    threads = [h.summary.hardware.numCpuThreads for h in cluster.host]
    memory = [h.summary.hardware.memorySize // 2 ** 20 for h in cluster.host]
    # Datastores XHV mounted for volumes (other tests of this vcsim) hold
    # no instance disks.
    capacity = sum(d.summary.capacity for d in cluster.datastore
                   if not d.summary.name.startswith('xhv-nfs-'))

    resources = backend.get_available_resource(node)
    assert resources['vcpus'] == sum(threads)
    assert resources['memory_mb'] == sum(memory)
    assert resources['local_gb'] == capacity // 2 ** 30
    assert resources['supported_instances'] == [('x86_64', 'vmware', 'hvm')]

    tree = provider_tree.ProviderTree()
    tree.new_root(node, '5f0b1f6c-5d0c-4f7e-9d55-0e7c8d4c0a11')
    backend.update_provider_tree(tree, node)
    inv = tree.data(node).inventory
    assert inv[orc.VCPU]['total'] == sum(threads)
    assert inv[orc.VCPU]['max_unit'] == max(threads)
    assert inv[orc.MEMORY_MB]['total'] == sum(memory)
    assert inv[orc.DISK_GB]['total'] == capacity // 2 ** 30
    assert tree.data(node).traits == {'HW_ARCH_X86_64'}
    caps = backend.capabilities
    assert caps['supports_image_type_vmdk'] and caps['supports_image_type_raw']
    assert not caps['supports_image_type_vhdx']


def test_recursive_traversal_specs_do_not_crash_vcsim(admin_si):
    # oslo.vmware's get_objects shape: visitFolders selects every spec,
    # whose paths (resourcePool, vm, host, datastore) also exist on other
    # types.  Unpatched vcsim recursed until it died (patch 0001).
    pc = vmodl.query.PropertyCollector
    names = ['visitFolders', 'dcToHf', 'dcToVmf', 'dcToDs', 'crToH',
             'crToRp', 'rpToRp', 'rpToVm', 'hToVm']

    def spec(name, type_, path, select=()):
        return pc.TraversalSpec(
            name=name, type=type_, path=path, skip=False,
            selectSet=[pc.SelectionSpec(name=n) for n in select])

    traversal = [
        spec('visitFolders', vim.Folder, 'childEntity', names),
        spec('dcToHf', vim.Datacenter, 'hostFolder', ['visitFolders']),
        spec('dcToVmf', vim.Datacenter, 'vmFolder', ['visitFolders']),
        spec('dcToDs', vim.Datacenter, 'datastore', ['visitFolders']),
        spec('crToH', vim.ComputeResource, 'host', names),
        spec('crToRp', vim.ComputeResource, 'resourcePool', names),
        spec('rpToRp', vim.ResourcePool, 'resourcePool', names),
        spec('rpToVm', vim.ResourcePool, 'vm', names),
        spec('hToVm', vim.HostSystem, 'vm', names),
    ]
    filter_spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=admin_si.content.rootFolder,
                                 selectSet=traversal)],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=['name'])])
    result = admin_si.content.propertyCollector.RetrievePropertiesEx(
        [filter_spec], pc.RetrieveOptions())
    found = {o.propSet[0].val for o in result.objects}
    view = admin_si.content.viewManager.CreateContainerView(
        admin_si.content.rootFolder, [vim.VirtualMachine], True)
    assert found == {vm.name for vm in view.view} and found


# -- instance lifecycle and disk exchange ---------------------------------

def test_stage_spawn_power_export_destroy(make_backend, admin_si, vcsim,
                                          guest_disk, tmp_path, conf):
    backend = make_backend()
    instance = make_instance(vcpus=2, memory_mb=256)
    foreign = backend.list_instances()

    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=guest_disk['size'], path=guest_disk['vmdk'])])
    # A staged VM is not an instance yet.
    assert instance.uuid not in backend.list_instance_uuids()
    backend.spawn_from_disks(None, instance, staged, [], None)

    assert backend.list_instance_uuids() == [instance.uuid]
    assert backend.list_instances() == [instance.uuid] and not foreign
    vm = _vm_by_uuid(admin_si, instance.uuid)
    assert vm.config.hardware.numCPU == 2
    assert vm.config.hardware.memoryMB == 256
    assert vm.config.annotation.startswith(vmops.INSTANCE_MARKER)
    controllers = [d for d in vm.config.hardware.device
                   if isinstance(d, vim.vm.device.VirtualLsiLogicController)]
    assert len(controllers) == 1  # the default adapter type

    assert backend.get_info(instance).state == power_state.RUNNING
    with pytest.raises(exception.InstanceInvalidState):
        backend.export_disks(None, instance)
    backend.reboot(None, instance, [], 'SOFT')
    assert backend.get_info(instance).state == power_state.RUNNING
    backend.power_off(instance, timeout=5, retry_interval=0.1)
    assert backend.get_info(instance).state == power_state.SHUTDOWN
    backend.power_on(None, instance, [])
    assert backend.get_info(instance).state == power_state.RUNNING
    backend.power_off(instance)

    # Export through the datastore API, read in place (no local copy): the
    # uploaded guest data comes back, whole and by range.
    exported = backend.export_disks(None, instance)
    assert [(d.format, d.subformat, d.bus, d.boot_index)
            for d in exported] == [('vmdk', 'streamOptimized', 'lsiLogic', 0)]
    assert exported[0].virtual_size == guest_disk['size']
    assert exported[0].path is None and exported[0].url.startswith('https')
    assert not glob.glob(os.path.join(backend._staging_root, 'export-*'))
    local = _read_export(backend, exported[0], tmp_path)
    assert translate.compare(local, 'vmdk', guest_disk['raw'], 'raw')
    stored = os.path.join(vcsim.datastore_dir(), instance.uuid,
                          os.path.basename(exported[0].handle.split()[-1]))
    assert disks.sha256_file(local) == disks.sha256_file(stored)
    reader = backend.open_exported_disk(exported[0])
    try:
        # Several ranges over the same keep-alive connections.
        last = reader.size - 1
        for start, end in ((0, 511), (4096, 70000), (last - 2, last)):
            with open(stored, 'rb') as f:
                f.seek(start)
                assert b''.join(reader.iter_range(start, end, 1000)) == \
                    f.read(end - start + 1)
        with pytest.raises(OSError):
            list(reader.iter_range(0, reader.size + 10))
    finally:
        reader.close()
    backend.release_exported_disks(None, instance, exported)

    # And through an ExportVm lease (patch 0003; NFC GET is patch 0002).
    nfc_backend = make_backend(export_method='nfc')
    streamed = nfc_backend.export_disks(None, instance)
    assert streamed[0].path and os.path.isfile(streamed[0].path)
    assert translate.compare(streamed[0].path, 'vmdk', guest_disk['raw'],
                             'raw')
    nfc_backend.release_exported_disks(None, instance, streamed)
    assert not os.path.exists(streamed[0].path)

    vm_dir = os.path.join(vcsim.datastore_dir(), instance.uuid)
    assert os.listdir(vm_dir)
    backend.destroy(None, instance, [])
    assert _vm_by_uuid(admin_si, instance.uuid) is None
    assert not os.path.exists(vm_dir)
    assert backend.list_instance_uuids() == []
    backend.destroy(None, instance, [])  # idempotent


def test_discard_staged_disks_removes_the_staging_vm(make_backend, admin_si,
                                                     vcsim, guest_disk):
    backend = make_backend()
    instance = make_instance()
    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=guest_disk['size'], path=guest_disk['vmdk'])])
    assert _vm_by_uuid(admin_si, instance.uuid) is not None
    backend.discard_staged_disks(None, instance, staged)
    backend.discard_staged_disks(None, instance, staged)  # idempotent
    assert _vm_by_uuid(admin_si, instance.uuid) is None
    assert not os.path.exists(os.path.join(vcsim.datastore_dir(),
                                           instance.uuid))


def test_stage_refuses_non_native_disks(make_backend, guest_disk):
    backend = make_backend()
    with pytest.raises(exception.NovaException) as caught:
        backend.stage_disks(None, make_instance(), [DiskDescriptor(
            format='raw', virtual_size=guest_disk['size'],
            path=guest_disk['raw'])])
    assert 'streamOptimized' in str(caught.value)


def _put(vcsim, backend, path, data):
    """PUT a file through the datastore API, independently of the backend.

    (http.client: Nova's harness, collected in the same run, monkey
    patches what requests/urllib3 use.)
    """
    conn = http.client.HTTPSConnection(
        vcsim.host, vcsim.port,
        context=ssl.create_default_context(cafile=vcsim.ca_file))
    try:
        url = backend._files.url(vcsim.datastore, path).split('/', 3)[3]
        conn.request('PUT', '/' + url, body=data,
                     headers={'Cookie': backend._session.cookie})
        resp = conn.getresponse()
        assert resp.status in (200, 201), resp.read()
    finally:
        conn.close()


ESXI_DESCRIPTOR = '''# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW {sectors} VMFS "{name}-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "8"
ddb.geometry.heads = "64"
ddb.geometry.sectors = "32"
ddb.thinProvisioned = "1"
ddb.virtualHWVersion = "13"
'''


def test_export_descriptor_and_flat_pair_as_esxi_writes_it(
        make_backend, vcsim, guest_disk, tmp_path):
    # vcsim keeps uploads verbatim; ESXi would hold a descriptor plus a
    # -flat.vmdk extent.  Put exactly that under the VM's disk and export.
    backend = make_backend()
    instance = make_instance()
    staged = _stage_and_spawn(backend, instance, guest_disk, power_on=False)
    ds_path = staged[0].handle.split('|', 1)[1]
    path = ds_path.split('] ', 1)[1]
    name = os.path.basename(path)[:-len('.vmdk')]
    sectors = guest_disk['size'] // 512
    folder = os.path.dirname(path)
    backend._files.upload(guest_disk['raw'], vcsim.datastore,
                          '%s/%s-flat.vmdk' % (folder, name))
    _put(vcsim, backend, path,
         ESXI_DESCRIPTOR.format(sectors=sectors, name=name).encode())

    exported = backend.export_disks(None, instance)
    assert len(exported) == 1
    disk = exported[0]
    assert (disk.format, disk.subformat) == ('raw', None)
    assert disk.virtual_size == guest_disk['size']
    assert disks.sha256_file(_read_export(backend, disk, tmp_path)) == \
        disks.sha256_file(guest_disk['raw'])
    assert disk.handle == ds_path
    backend.release_exported_disks(None, instance, exported)

    # A snapshot delta is refused with what to do about it.
    _put(vcsim, backend, path, ESXI_DESCRIPTOR.format(
        sectors=sectors, name=name).replace(
        'parentCID=ffffffff', 'parentCID=12345678').replace(
        'createType="vmfs"', 'createType="vmfsSparse"').encode())
    with pytest.raises(errors.VSphereDiskError) as caught:
        backend.export_disks(None, instance)
    assert 'consolidate' in str(caught.value)
    backend.destroy(None, instance, [])


def test_spawn_refuses_a_port_it_cannot_plug(make_backend):
    # More in test_network.py.
    backend = make_backend()
    with pytest.raises(exception.NovaException) as caught:
        backend.spawn(None, make_instance(), None, [], None, {},
                      network_info=[{'id': 'port'}])
    assert 'cannot plug Neutron port port' in str(caught.value)


def test_vsphere_faults_are_named(make_backend):
    backend = make_backend()
    with pytest.raises(exception.InstanceNotFound):
        backend.get_info(make_instance())
    # A vSphere fault comes out as a Nova exception naming it.
    with pytest.raises(errors.VSphereError) as caught:
        backend._session.run('MakeDirectory',
                             backend._session.content.fileManager
                             .MakeDirectory, name='no-bracket-path',
                             datacenter=backend._compute.datacenter)
    assert 'MakeDirectory failed with InvalidDatastorePath' in str(
        caught.value)


def test_ssl_context_verifies_by_default():
    session = vsession.VSphereSession('127.0.0.1', 1, 'u', 'p')
    context = session.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_two_disks_keep_their_order_through_import_and_export(
        make_backend, guest_disk, tmp_path):
    backend = make_backend()
    instance = make_instance()
    data_raw = str(tmp_path / 'data.raw')
    disks.make_raw_disk(data_raw, 6 * disks.MiB, seed=99)
    data_vmdk = str(tmp_path / 'data.vmdk')
    translate.convert(data_raw, data_vmdk, to_format='vmdk',
                      from_format='raw', subformat='streamOptimized')
    staged = backend.stage_disks(None, instance, [
        DiskDescriptor(format='vmdk', subformat='streamOptimized',
                       virtual_size=guest_disk['size'],
                       path=guest_disk['vmdk'], bus='paraVirtual'),
        DiskDescriptor(format='vmdk', subformat='streamOptimized',
                       virtual_size=6 * disks.MiB, path=data_vmdk,
                       boot_index=None, bus='paraVirtual')])
    backend.spawn_from_disks(None, instance, staged, [], None,
                             power_on=False)
    exported = backend.export_disks(None, instance)
    assert [(d.boot_index, d.bus, d.virtual_size) for d in exported] == [
        (0, 'paraVirtual', guest_disk['size']),
        (None, 'paraVirtual', 6 * disks.MiB)]
    assert translate.compare(_read_export(backend, exported[0], tmp_path),
                             'vmdk', guest_disk['raw'], 'raw')
    assert translate.compare(_read_export(backend, exported[1], tmp_path,
                                          'data'), 'vmdk', data_raw, 'raw')
    backend.release_exported_disks(None, instance, exported)
    backend.destroy(None, instance, [])


def test_direct_read_is_one_ticket_for_one_get_of_one_file(
        make_backend, vcsim, guest_disk):
    backend = make_backend()
    instance = make_instance()
    _stage_and_spawn(backend, instance, guest_disk, power_on=False)
    exported = backend.export_disks(None, instance)
    reader = backend.open_exported_disk(exported[0])
    stored = os.path.join(vcsim.datastore_dir(), instance.uuid,
                          os.path.basename(exported[0].handle.split()[-1]))
    with open(stored, 'rb') as f:
        head = f.read(512)

    def get(direct, url=None, method='GET'):
        source = translate.RemoteSource(direct.url, headers=direct.headers,
                                        ca_file=vcsim.ca_file)
        with source.session() as session:
            return session.request(method, url or direct.url, headers={
                'Range': 'bytes=0-511'}, timeout=30)

    try:
        direct = reader.direct_read()
        assert direct.url == exported[0].url
        assert direct.headers['Cookie'].startswith('vmware_cgi_ticket=')
        with open(vcsim.ca_file) as f:
            assert direct.ca_pem == f.read()
        assert not direct.insecure
        response = get(direct)
        assert response.status_code == 206 and response.content == head
        # Once only (patch 0004 makes vcsim check tickets as vSphere does).
        assert get(direct).status_code == 401
        # Only the method and the file it was acquired for.
        assert get(reader.direct_read(), method='PUT').status_code == 401
        other = exported[0].url.replace('.vmdk', '-other.vmdk')
        assert get(reader.direct_read(), url=other).status_code == 401
        # Each ask is a new ticket.
        assert get(reader.direct_read()).status_code == 206
    finally:
        reader.close()
    backend.release_exported_disks(None, instance, exported)
    # Operators can keep the data on the exchange path.
    proxied = make_backend(direct_datastore_reads=False)
    reader = proxied.open_exported_disk(exported[0])
    try:
        assert reader.direct_read() is None
    finally:
        reader.close()
