"""The backend contract (nova_xhv/backends/base.py), checked on a test bed.

``BackendConformance`` is one reusable set of tests.  A family runs it by
subclassing it in a ``test_*.py`` module and providing a ``bed`` fixture
that returns a ``TestBed`` on the family's real test bed (fake: a
temporary folder; vSphere: vcsim; KVM: libvirtd).  Nothing is mocked:
every call goes to the backend, and the bed checks the hypervisor's own
storage for leftovers.
"""

import hashlib
import os
import threading

from nova.compute import power_state
from nova import exception
from nova import objects
import pytest

from nova_xhv.backends import base
from nova_xhv.backends import family
from nova_xhv import disk as xhv_disk
from nova_xhv import translate
from nova_xhv.translate import formats
from tests.fixtures import disks

MiB = disks.MiB


class TestBed(object):
    """What a family's test bed provides to the conformance suite."""

    #: The started backend under test.
    backend = None
    #: The request context backend calls get (None where none is needed).
    context = None

    def new_instance(self):
        """A Nova Instance object this backend may create a guest for."""
        raise NotImplementedError

    def native_disk(self, folder, name, size=8 * MiB, bootable=True):
        """A disk in the backend's native format, written by the engine."""
        raw = os.path.join(folder, name + '.raw')
        if bootable:
            disks.make_bootable_disk(raw, virtual_size=size)
        else:
            disks.make_raw_disk(raw, size)
        backend = self.backend
        target = os.path.join(folder,
                              '%s.%s' % (name, backend.native_format))
        translate.convert(raw, target, to_format=backend.native_format,
                          from_format='raw',
                          subformat=backend.native_subformat)
        os.unlink(raw)
        info = translate.inspect_image(target,
                                       claimed_format=backend.native_format)
        return xhv_disk.DiskDescriptor(
            format=backend.native_format, subformat=info.subformat,
            virtual_size=info.virtual_size, path=target,
            bus=backend.facts.native_name(family.DISK_BUS, 'sata'),
            boot_index=0 if bootable else None)

    def extra_disk(self, folder, name):
        """A non-boot native disk this bed's instances have room for."""
        return self.native_disk(folder, name, bootable=False)

    #: For families XHV binds: the switch the bed's physical network maps
    #: to (what ``[ml2_xhv] physical_network_mappings`` would say).
    switch = None

    def vif(self, n, vlan=None):
        """The n-th VIF of a port bound to this bed's host.

        As Nova's network_info carries it after Neutron bound it with what
        the family declares; None where the bed has no network to plug
        into.
        """
        net = self.backend.facts.network
        if not net.bound_by_xhv:
            return None
        physnet = 'conformance'
        details = {
            family.DETAIL_FAMILY: self.backend.family,
            family.DETAIL_NETWORK_TYPE: 'vlan' if vlan else 'flat',
            family.DETAIL_PHYSICAL_NETWORK: physnet,
            family.DETAIL_SEGMENTATION_ID: vlan,
            net.switch_detail: self.switch,
            net.port_group_detail: 'xhv-%s%s' % (
                physnet, '-%d' % vlan if vlan else ''),
        }
        return {'id': '0000000%d-aaaa-4bbb-8ccc-dddddddddddd' % n,
                'type': net.vif_types[0],
                'address': 'fa:16:3e:00:aa:%02x' % n, 'details': details}

    def image_meta(self, instance):
        """The ImageMeta a spawn of ``instance`` gets."""
        return objects.ImageMeta.from_dict({'properties': {}})

    def leftovers(self, instance):
        """What the hypervisor's storage holds for ``instance`` (names)."""
        raise NotImplementedError

    def destroy(self, instance):
        self.backend.destroy(self.context, instance, [], destroy_disks=True)

    def nfs_export(self, tmp_path):
        """A local directory the hypervisor reaches as an NFS export.

        None when the bed cannot serve one (the volume checks skip).
        """
        return None

    def attached_volume_files(self, instance):
        """Base names of the volume files the guest's disks open."""
        raise NotImplementedError


def nfs_connection_info(export, name, fmt='raw'):
    """What XHV's volume driver (around Cinder's NFS driver) answers."""
    return {'driver_volume_type': 'nfs', 'serial': name,
            'data': {'export': '127.0.0.1:%s' % export, 'name': name,
                     'options': None, 'format': fmt,
                     family.CONNECTOR_FAMILY_KEY: None}}


def _sha256(reader):
    digest = hashlib.sha256()
    try:
        for chunk in reader.iter_range(0, reader.size - 1, 1024 * 1024):
            digest.update(chunk)
    finally:
        reader.close()
    return digest.hexdigest()


class BackendConformance(object):
    """Every backend passes these (see module doc)."""

    # -- helpers -----------------------------------------------------------

    def _guest(self, bed, tmp_path, power_on=True, extra_disks=0,
               network_info=()):
        instance = bed.new_instance()
        bed.last_instance = instance
        folder = str(tmp_path / ('in-' + instance.uuid))
        os.makedirs(folder)
        incoming = [bed.native_disk(folder, 'boot')]
        for n in range(extra_disks):
            incoming.append(bed.extra_disk(folder, 'data%d' % n))
        backend = bed.backend
        backend.check_stageable(bed.context, instance, incoming)
        staged = backend.stage_disks(bed.context, instance, incoming)
        try:
            backend.spawn_from_disks(bed.context, instance, staged,
                                     list(network_info),
                                     bed.image_meta(instance),
                                     power_on=power_on)
        except Exception:
            backend.discard_staged_disks(bed.context, instance, staged)
            raise
        return instance

    # -- the family's facts ------------------------------------------------

    def test_facts_are_complete(self, bed):
        backend = bed.backend
        facts = backend.facts
        assert isinstance(facts, family.Family)
        assert family.families()[facts.name] is facts
        assert (backend.family, backend.native_format,
                backend.native_subformat) == (
            facts.name, facts.native_format, facts.native_subformat)
        # The engine writes the native format.
        assert formats.target_subformat(
            facts.native_format, facts.native_subformat) == \
            facts.native_subformat
        assert set(facts.spawn_formats) <= set(formats.FORMATS)
        for kind, classes in family.CLASSES.items():
            for cls in classes:
                native = facts.native_name(kind, cls)
                assert facts.classify(kind, native) == cls, (kind, cls)
                if kind != family.FIRMWARE:
                    assert facts.image_properties[kind][cls]
            for alias, cls in facts.hardware_aliases.get(kind, {}).items():
                assert cls in classes and facts.classify(kind, alias) == cls
        for hv_type in facts.hypervisor_types + facts.image_hv_types:
            assert family.family_of_hv_type(hv_type) == facts.name

    def test_volume_facts_are_well_formed(self, bed):
        facts = bed.backend.facts
        for kind, fmts in facts.volume_attach.items():
            assert kind == kind.lower()
            assert fmts and set(fmts) <= set(formats.FORMATS), (kind, fmts)
            assert facts.attaches(kind) and facts.attaches(kind.upper())
            assert facts.name in family.families_attaching(kind, fmts[0])
        assert not facts.attaches('xhv-no-such-volume-type')

    # -- volumes -----------------------------------------------------------

    def _nfs_volume(self, bed, tmp_path, fmt='raw'):
        export = bed.nfs_export(tmp_path)
        if export is None:
            pytest.skip('this test bed serves no NFS export')
        if not bed.backend.facts.attaches('nfs', fmt):
            pytest.skip('the %s family does not attach %s NFS volumes'
                        % (bed.backend.family, fmt))
        name = 'volume-%s' % os.path.basename(str(tmp_path))
        path = os.path.join(export, name)
        disks.make_raw_disk(path, 4 * MiB, seed=5)
        os.chmod(path, 0o666)
        info = nfs_connection_info(export, name, fmt)
        info['data'][family.CONNECTOR_FAMILY_KEY] = bed.backend.family
        return info, path

    def test_volume_attaches_in_place_and_detaches(self, bed, tmp_path):
        backend = bed.backend
        info, path = self._nfs_volume(bed, tmp_path)
        name = os.path.basename(path)
        before = disks.sha256_file(path)
        # What a move asks a destination before power-off: yes, and
        # nothing made for it.
        backend.check_volume_attachable(info)
        assert sorted(os.listdir(os.path.dirname(path))) == [name]
        instance = self._guest(bed, tmp_path)
        try:
            connector = backend.get_volume_connector(instance)
            assert 'instance' not in connector
            assert family.CONNECTOR_FAMILY_KEY not in connector
            backend.attach_volume(bed.context, info, instance, '/dev/sdb')
            assert bed.attached_volume_files(instance) == [name]
            # Idempotent.
            backend.attach_volume(bed.context, info, instance, '/dev/sdb')
            assert bed.attached_volume_files(instance) == [name]
            # Volumes move by re-attaching, never with the guest's disks.
            backend.power_off(instance)
            exported = backend.export_disks(bed.context, instance)
            assert len(exported) == 1
            backend.release_exported_disks(bed.context, instance, exported)
            backend.detach_volume(bed.context, info, instance, '/dev/sdb')
            assert bed.attached_volume_files(instance) == []
            backend.detach_volume(bed.context, info, instance, '/dev/sdb')
            # Attached again, then the guest deleted: the data stay.
            backend.attach_volume(bed.context, info, instance, '/dev/sdb')
        finally:
            bed.destroy(instance)
        assert disks.sha256_file(path) == before
        assert bed.leftovers(instance) == []
        assert sorted(os.listdir(os.path.dirname(path))) == [name]

    def test_volume_outside_the_declared_facts_is_refused(self, bed,
                                                          tmp_path):
        backend = bed.backend
        info, path = self._nfs_volume(bed, tmp_path)
        refused = [dict(info, driver_volume_type='xhv-no-such-type')]
        unopened = [f for f in formats.FORMATS
                    if not backend.facts.attaches('nfs', f)]
        if unopened:
            refused.append(dict(info, data=dict(info['data'],
                                                format=unopened[0])))
        for bad in refused:
            with pytest.raises(exception.NovaException):
                backend.check_volume_attachable(bad)
        instance = self._guest(bed, tmp_path)
        try:
            for bad in refused:
                with pytest.raises(Exception):
                    backend.attach_volume(bed.context, bad, instance,
                                          '/dev/sdb')
                assert bed.attached_volume_files(instance) == []
        finally:
            bed.destroy(instance)
        assert sorted(os.listdir(os.path.dirname(path))) == [
            os.path.basename(path)]
    # -- the network contract (base.py, doc/source/networking.rst) ---------

    def test_network_facts_are_declared(self, bed):
        net = bed.backend.facts.network
        assert isinstance(net, family.Network), \
            'family %s declares no network facts' % bed.backend.family
        net.check(bed.backend.family)

    def test_ports_are_plugged_with_their_mac_in_order(self, bed, tmp_path):
        vifs = [bed.vif(1, vlan=101), bed.vif(2)]
        if None in vifs:
            pytest.skip('this bed has no network to plug a %s port into'
                        % bed.backend.facts.network.vif_types[0])
        instance = self._guest(bed, tmp_path, power_on=False,
                               network_info=vifs)
        try:
            assert bed.backend.plugged_ports(instance) == [
                (v['id'], v['address']) for v in vifs]
        finally:
            bed.destroy(instance)

    def test_a_port_it_cannot_plug_is_refused_before_anything_exists(
            self, bed, tmp_path):
        good = bed.vif(1) or {
            'id': 'p1', 'type': bed.backend.facts.network.vif_types[0],
            'address': 'fa:16:3e:00:aa:01'}
        for bad, reason in (({'type': 'binding_failed'}, 'did not bind'),
                            ({'type': 'no-such-vif-type'}, 'no-such'),
                            ({'address': 'not-a-mac'}, 'not a MAC')):
            bad = dict(good, id='p-bad', **bad)
            with pytest.raises(base.VifRefused) as error:
                self._guest(bed, tmp_path, network_info=[good, bad])
            assert 'p-bad' in str(error.value)
            assert reason in str(error.value)
            assert bed.leftovers(bed.last_instance) == []
            with pytest.raises(exception.InstanceNotFound):
                bed.backend.get_info(bed.last_instance)

    # -- lifecycle ---------------------------------------------------------

    def test_lifecycle_reports_honest_power_states(self, bed, tmp_path):
        backend = bed.backend
        instance = self._guest(bed, tmp_path)
        try:
            assert instance.uuid in backend.list_instance_uuids()
            assert backend.get_info(instance).state == power_state.RUNNING
            backend.power_off(instance)
            assert backend.get_info(instance).state == power_state.SHUTDOWN
            backend.power_on(bed.context, instance, [])
            assert backend.get_info(instance).state == power_state.RUNNING
            backend.reboot(bed.context, instance, [], 'HARD')
            assert backend.get_info(instance).state == power_state.RUNNING
        finally:
            bed.destroy(instance)
        assert instance.uuid not in backend.list_instance_uuids()
        with pytest.raises(exception.InstanceNotFound):
            backend.get_info(instance)
        assert bed.leftovers(instance) == []

    def test_spawn_powered_off_stays_off(self, bed, tmp_path):
        instance = self._guest(bed, tmp_path, power_on=False)
        try:
            assert bed.backend.get_info(instance).state == \
                power_state.SHUTDOWN
        finally:
            bed.destroy(instance)

    # -- export ------------------------------------------------------------

    def test_export_is_readable_and_never_changes_the_original(
            self, bed, tmp_path):
        backend = bed.backend
        instance = self._guest(bed, tmp_path, extra_disks=1)
        try:
            backend.power_off(instance)
            exported = backend.export_disks(bed.context, instance)
            assert len(exported) == 2
            assert exported[0].boot_index == 0
            assert exported[1].boot_index is None
            for disk in exported:
                assert disk.format in formats.FORMATS
                assert disk.virtual_size > 0
                assert backend.facts.classify(family.DISK_BUS,
                                              disk.bus) is not None
            first = [_sha256(backend.open_exported_disk(d))
                     for d in exported]
            backend.release_exported_disks(bed.context, instance, exported)
            # Idempotent, and the guest is whole afterwards.
            backend.release_exported_disks(bed.context, instance, exported)
            again = backend.export_disks(bed.context, instance)
            assert [_sha256(backend.open_exported_disk(d))
                    for d in again] == first
            backend.release_exported_disks(bed.context, instance, again)
            backend.power_on(bed.context, instance, [])
            assert backend.get_info(instance).state == power_state.RUNNING
        finally:
            bed.destroy(instance)

    def test_export_refuses_a_running_guest(self, bed, tmp_path):
        instance = self._guest(bed, tmp_path)
        try:
            with pytest.raises(Exception):
                bed.backend.export_disks(bed.context, instance)
        finally:
            bed.destroy(instance)

    # -- stage and discard -------------------------------------------------

    def test_failing_stage_leaves_nothing_behind(self, bed, tmp_path):
        backend = bed.backend
        instance = bed.new_instance()
        folder = str(tmp_path / 'in')
        os.makedirs(folder)
        good = bed.native_disk(folder, 'boot')
        bad = bed.native_disk(folder, 'data', bootable=False)
        os.unlink(bad.path)  # vanished from the private folder mid-move
        with pytest.raises(Exception):
            backend.stage_disks(bed.context, instance, [good, bad])
        assert bed.leftovers(instance) == []

    def test_stage_refuses_a_foreign_format(self, bed, tmp_path):
        backend = bed.backend
        instance = bed.new_instance()
        raw = str(tmp_path / 'boot.raw')
        disks.make_bootable_disk(raw, virtual_size=8 * MiB)
        foreign = xhv_disk.DiskDescriptor(
            format='raw', virtual_size=os.path.getsize(raw), path=raw,
            boot_index=0)
        with pytest.raises(Exception):
            backend.stage_disks(bed.context, instance, [foreign])
        assert bed.leftovers(instance) == []
        assert os.path.exists(raw)

    def test_discard_is_idempotent(self, bed, tmp_path):
        backend = bed.backend
        instance = bed.new_instance()
        folder = str(tmp_path / 'in')
        os.makedirs(folder)
        staged = backend.stage_disks(bed.context, instance, [
            bed.native_disk(folder, 'boot')])
        assert bed.leftovers(instance) != []
        # Read back from a journal, as after a restart.
        staged = [xhv_disk.DiskDescriptor.from_dict(d.to_dict())
                  for d in staged]
        backend.discard_staged_disks(bed.context, instance, staged)
        assert bed.leftovers(instance) == []
        backend.discard_staged_disks(bed.context, instance, staged)
        assert bed.leftovers(instance) == []

    def test_import_disks_discards_when_spawn_fails(self, bed, tmp_path):
        backend = bed.backend
        instance = self._guest(bed, tmp_path)
        folder = str(tmp_path / 'again')
        os.makedirs(folder)
        try:
            before = bed.leftovers(instance)
            # The guest exists already: spawn refuses, staging is undone.
            with pytest.raises(Exception):
                backend.import_disks(
                    bed.context, instance, [bed.native_disk(folder, 'boot')],
                    [], bed.image_meta(instance))
            assert bed.leftovers(instance) == before
            assert backend.get_info(instance).state == power_state.RUNNING
        finally:
            bed.destroy(instance)

    # -- disks as streams (optional: accepts_disk_streams) -----------------

    def _streamed(self, bed, instance, raw, **stream_kwargs):
        backend = bed.backend
        with translate.open_stream(raw, from_format='raw',
                                   **stream_kwargs) as stream:
            disk = xhv_disk.DiskDescriptor(
                format=backend.native_format,
                subformat=backend.native_subformat,
                virtual_size=stream.virtual_size,
                url='https://source.invalid/disk-0',
                bus=backend.facts.native_name(family.DISK_BUS, 'sata'),
                boot_index=0)
            return backend.stage_disk_streams(bed.context, instance, [disk],
                                              [stream])

    def test_streamed_disks_spawn_and_a_cut_stream_leaves_nothing(
            self, bed, tmp_path):
        backend = bed.backend
        raw = str(tmp_path / 'boot.raw')
        disks.make_bootable_disk(raw, virtual_size=8 * MiB)
        instance = bed.new_instance()
        if not backend.accepts_disk_streams():
            # The contract's default: a move gives it files.
            with pytest.raises(NotImplementedError):
                self._streamed(bed, instance, raw)
            assert bed.leftovers(instance) == []
            return
        assert formats.STREAM_OPTIMIZED == backend.native_subformat
        staged, results = self._streamed(bed, instance, raw)
        assert [r.virtual_size for r in results] == [8 * MiB]
        try:
            backend.spawn_from_disks(bed.context, instance, staged, [],
                                     bed.image_meta(instance))
            assert backend.get_info(instance).state == power_state.RUNNING
        finally:
            bed.destroy(instance)
        assert bed.leftovers(instance) == []

        # The writer fails half-way through the upload: nothing is left.
        big = str(tmp_path / 'big.raw')
        disks.make_raw_disk(big, 64 * MiB)
        instance = bed.new_instance()
        cancel = threading.Event()
        with pytest.raises(translate.ConversionFailed):
            self._streamed(bed, instance, big, cancel_event=cancel,
                           progress=lambda p: p >= 10 and cancel.set())
        assert bed.leftovers(instance) == []
