"""XHV's ML2 mechanism driver against a stand-in PortContext.

The driver reads the installed families' facts; these tests use the real
ones (vmware, fake, kvm).  tests/functional/neutron runs it inside a real
neutron-server.
"""

from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api
from oslo_config import cfg
import pytest

from neutron_xhv.ml2 import mech_driver
from nova_xhv.backends import family


class PortContext(object):
    """What bind_port reads and writes of ML2's PortContext."""

    def __init__(self, host, segments, vnic_type='normal'):
        self.host = host
        self.current = {'id': 'port-1', portbindings.VNIC_TYPE: vnic_type}
        self.segments_to_bind = segments
        self.bound = None

    def set_binding(self, segment_id, vif_type, vif_details, status=None):
        assert self.bound is None, 'bound twice'
        self.bound = (segment_id, vif_type, vif_details, status)


def segment(network_type='vlan', physnet='public', seg_id=100, sid='seg-1'):
    return {api.ID: sid, api.NETWORK_TYPE: network_type,
            api.PHYSICAL_NETWORK: physnet, api.SEGMENTATION_ID: seg_id}


def driver(**options):
    conf = cfg.ConfigOpts()
    d = mech_driver.XHVMechanismDriver(conf)
    mech_driver.xhv_conf.register_opts(conf)
    options.setdefault('host_families', {'vc-1': 'vmware'})
    options.setdefault('physical_network_mappings', ['vmware:public:DVS0'])
    for name, value in options.items():
        conf.set_override(name, value, group='ml2_xhv')
    conf([])
    d.initialize()
    return d


def test_the_entry_point_names_the_driver():
    import importlib.metadata
    eps = importlib.metadata.entry_points(
        group='neutron.ml2.mechanism_drivers')
    assert [ep.load() for ep in eps if ep.name == 'xhv'] == \
        [mech_driver.XHVMechanismDriver]


def test_binds_a_vsphere_host_with_dvs_and_the_segment_port_group():
    ctx = PortContext('vc-1', [segment()])
    driver().bind_port(ctx)
    segment_id, vif_type, details, status = ctx.bound
    assert (segment_id, vif_type, status) == ('seg-1', 'dvs', 'ACTIVE')
    assert details == {
        'xhv_family': 'vmware', 'network_type': 'vlan',
        'physical_network': 'public', 'segmentation_id': 100,
        'dvs_name': 'DVS0', 'dvs_port_group_name': 'xhv-public-100',
        'port_filter': False}


def test_flat_segment_has_no_vlan_and_a_host_mapping_wins():
    ctx = PortContext('vc-1', [segment('flat', seg_id=None)])
    driver(physical_network_mappings=[
        'vmware:public:DVS0', 'vc-1:public:DVS-HOST']).bind_port(ctx)
    details = ctx.bound[2]
    assert details['segmentation_id'] is None
    assert details['dvs_name'] == 'DVS-HOST'
    assert details['dvs_port_group_name'] == 'xhv-public'


def test_the_family_alias_and_the_fake_family_bind_with_their_own_facts():
    ctx = PortContext('f-1', [segment()])
    driver(host_families={'f-1': 'fake'},
           physical_network_mappings=['fake:public:sw0']).bind_port(ctx)
    assert ctx.bound[1] == family.lookup('fake').network.vif_types[0]
    assert ctx.bound[2]['fake_switch'] == 'sw0'
    ctx = PortContext('v-2', [segment()])
    driver(host_families={'v-2': 'vsphere'}).bind_port(ctx)
    assert ctx.bound[1] == 'dvs'


def test_hosts_it_is_not_configured_for_are_left_to_other_drivers():
    ctx = PortContext('kvm-1', [segment()])
    driver().bind_port(ctx)
    assert ctx.bound is None


def test_skips_segments_it_cannot_take_and_binds_the_next(caplog):
    ctx = PortContext('vc-1', [segment('geneve', None, 7, 'seg-g'),
                               segment(physnet='other', sid='seg-o'),
                               segment(sid='seg-ok')])
    driver().bind_port(ctx)
    assert ctx.bound[0] == 'seg-ok'


@pytest.mark.parametrize('segments,reason', [
    ([segment('geneve', None, 7)], 'takes flat, vlan'),
    ([segment(physnet='other')], "physical network 'other'"),
    ([segment(physnet='bad name!')], "'xhv-bad name!-100', which is not a"),
    ([], 'no segment'),
])
def test_a_host_it_cannot_bind_gets_a_failure_with_the_reason(
        caplog, segments, reason):
    ctx = PortContext('vc-1', segments)
    driver(physical_network_mappings=['vmware:public:DVS0',
                                      'vmware:bad name!:DVS0']
           if 'bad' in reason else ['vmware:public:DVS0']).bind_port(ctx)
    assert ctx.bound is None
    assert 'XHV cannot bind port port-1 to host vc-1' in caplog.text
    assert reason in caplog.text


def test_an_unusable_port_group_name_is_not_bound(caplog):
    ctx = PortContext('vc-1', [segment(physnet='a/b')])
    driver(physical_network_mappings=['vmware:a/b:DVS0']).bind_port(ctx)
    assert ctx.bound is None
    assert 'not a plain name' in caplog.text


def test_only_normal_vnic_types(caplog):
    ctx = PortContext('vc-1', [segment()], vnic_type='direct')
    driver().bind_port(ctx)
    assert ctx.bound is None
    assert 'vnic_type direct' in caplog.text


@pytest.mark.parametrize('options,message', [
    ({'host_families': {'h': 'powervm'}}, 'unknown hypervisor family'),
    ({'host_families': {'h': 'kvm'}}, 'ovn/openvswitch binds, not XHV'),
    ({'physical_network_mappings': ['vmware:public']}, 'is not <host'),
    ({'physical_network_mappings': ['nohost:public:DVS0']},
     'names neither a host'),
    ({'physical_network_mappings': ['vmware:public:DVS 0;']},
     'not a plain name'),
])
def test_bad_configuration_stops_the_driver_with_the_reason(options,
                                                            message):
    with pytest.raises(mech_driver.ConfigError, match=message):
        driver(**options)


def test_a_bad_port_group_prefix_is_refused_by_the_option():
    with pytest.raises(ValueError):
        driver(port_group_prefix='x y')
