"""The Xen family's test bed in Nova's harness: a xapi simulator per test.

``start_xen`` starts this test's simulator (HTTPS, private CA), points
``[xhv_xenapi]`` at it and starts the compute ``xen1`` with the xenapi
backend.  The simulator runs no guest: a server's disk is the raw file of
its boot VDI in the SR's folder, which ``guest_disk`` finds through xapi.
"""

import os

from tests.fixtures import xapi
from tests.functional import nova_base

XEN = 'xen1'


def simulator(tc):
    """This test's simulator, started on first use."""
    sim = getattr(tc, 'xapi_sim', None)
    if sim is None:
        sim = tc.xapi_sim = xapi.XapiSimulator().start()
        tc.addCleanup(sim.stop)
        for name, value in dict(
                url=sim.url, username=sim.username, password=sim.password,
                ca_file=sim.ca_file,
                staging_dir=os.path.join(tc.workdir, 'xen-staging')).items():
            tc.flags(group='xhv_xenapi', **{name: value})
    return sim


def start_xen(tc, host=XEN, volume_export=None):
    """The Xen compute; ``volume_export``: an export for volumes.

    A folder standing for an NFS export of this machine, and for the
    compute's mount of it.
    """
    simulator(tc)
    if volume_export:
        tc.flags(group='xhv_xenapi', volume_exports=[
            '127.0.0.1:%s=%s' % (volume_export, volume_export)])
    return tc.start_compute(host, backend='xenapi')


def make_xen_image(tc):
    """The tiny bootable disk as a dynamic vhd in Glance."""
    return tc.make_image('vhd', name='xen-guest')


def _records(tc, server):
    x = simulator(tc).session().xenapi
    vms = [r for r in x.VM.get_all_records().values()
           if r['other_config'].get('nova_uuid') == server['id']]
    return x, vms


def guest_disk(tc, server):
    """(path, format) of the server's boot disk: its VDI's raw file."""
    x, vms = _records(tc, server)
    assert len(vms) == 1, vms
    for vbd in vms[0]['VBDs']:
        record = x.VBD.get_record(vbd)
        if record['userdevice'] == '0':
            return simulator(tc).vdi_file(x.VDI.get_uuid(record['VDI'])), \
                'raw'
    raise AssertionError('server %s has no boot disk' % server['id'])


def xen_leftovers(tc, server):
    """What the pool holds for ``server``: VMs, and VDIs (staged or not)."""
    x, vms = _records(tc, server)
    vdis = [r['name_label'] for r in x.VDI.get_all_records().values()
            if server['id'] in r['other_config'].values()]
    return sorted([r['name_label'] for r in vms] + vdis)


def wait_running(tc, server, state='Running'):
    def running():
        _, vms = _records(tc, server)
        return len(vms) == 1 and vms[0]['power_state'] == state
    nova_base.wait_for(running, 30, what='the Xen VM %s' % state.lower())
