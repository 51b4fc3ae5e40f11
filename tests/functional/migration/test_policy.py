"""The XHV policy where Nova decides, in Nova's functional harness.

A vSphere compute (vcsim) and a fake-family compute (a folder), both
xhv.XHVDriver with the exchange on 127.0.0.1 and one policy file set per
test: no libvirtd is needed, so these tests take no KVM lock.  The policy
names families as data; the fake family stands in for a second
hypervisor family where a move is needed.
"""

import os
import tempfile

import yaml

from nova import objects
from nova.tests.functional.api import client

from nova_xhv.policy import cadf
from tests.functional.migration import base as migration_base
from tests.functional import nova_base
from tests.functional.vmware import test_nova as vmware_nova

VMW = migration_base.VMW
FAKE = migration_base.FAKE
SECRET = migration_base.SECRET
POLICY_FILTER = 'nova_xhv.scheduler.policy_filter.XHVPolicyFilter'

PCI_RULE = {'id': 'pci-admin-only', 'template': 'scoped_moves',
            'match': {'tags': ['pci']},
            'parameters': {'allow': [{'from': 'vmware', 'to': 'fake',
                                      'roles': ['admin']}]}}


class PolicyTestCase(vmware_nova.VMwareFunctionalTestCase):
    """vcsim + fake computes behind XHV, with a policy per test."""

    xhv_backend = None
    rules = []
    scheduler_filter = False
    # Put XHV's admission filter into nova-api's pipelines.
    admission = False

    def setUp(self):
        # The scheduler (and its filters) start in the harness's setUp:
        # the policy files exist before.
        self.policy_root = tempfile.mkdtemp(prefix='xhv-policy-')
        self.addCleanup(_rmtree, self.policy_root)
        self.policy_file = self.write_policy('policy.yaml', self.rules)
        self.flags(group='xhv_policy', policy_file=self.policy_file,
                   policy_dir=os.path.join(self.policy_root, 'policy.d'))
        if self.admission:
            self.api_paste_config = admission_paste_config(self.policy_root)
        if self.scheduler_filter:
            from nova.conf import scheduler
            defaults = [o for o in scheduler.filter_scheduler_opts
                        if o.name == 'enabled_filters'][0].default
            self.flags(available_filters=[
                'nova.scheduler.filters.all_filters', POLICY_FILTER],
                group='filter_scheduler')
            self.flags(enabled_filters=list(defaults) + ['XHVPolicyFilter'],
                       group='filter_scheduler')
        super().setUp()
        # Let members migrate (Nova's default: project managers and
        # admins), so the XHV policy is what tells them apart.
        self.policy.set_rules({
            'os_compute_api:os-migrate-server:migrate': '@',
            'os_compute_api:os-migrate-server:migrate:host': '@'},
            overwrite=False)
        self.member_api = self.api_fixture.api
        self.member_api.microversion = 'latest'

    def write_policy(self, name, rules):
        path = os.path.join(self.policy_root, name)
        with open(path, 'w') as f:
            yaml.safe_dump({'rules': rules}, f)
        return path

    def set_up_backend(self):
        super().set_up_backend()
        self.state_dir = tempfile.mkdtemp(prefix='xhv-moves-',
                                          dir=self.workdir)
        self.fake_dir = tempfile.mkdtemp(prefix='xhv-fake-', dir=self.workdir)
        self.flags(group='xhv_fake', disk_dir=self.fake_dir)
        for name, value in dict(
                exchange_secret=SECRET, exchange_bind_host='127.0.0.1',
                exchange_port=0, exchange_advertise_host='127.0.0.1',
                exchange_use_tls=False, migration_state_dir=self.state_dir,
                migration_poll_interval=0.1,
                migration_stage_timeout=120).items():
            self.flags(group='xhv', **{name: value})

    def hypervisor_guest_exists(self, server):
        return (super().hypervisor_guest_exists(server)
                or os.path.exists(os.path.join(self.fake_dir, FAKE,
                                               server['id'])))

    def start_both(self):
        self.start_compute(VMW, backend='vmware')
        self.start_compute(FAKE, backend='fake')

    def boot_on_vmware(self, tags=(), api=None):
        image_id, _raw = self.make_image('vmdk', {
            'vmware_disktype': 'streamOptimized',
            'vmware_adaptertype': 'lsiLogic'})
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1)
        api = api or self.api
        body = {'server': {'name': 'policy-test', 'imageRef': image_id,
                           'flavorRef': flavor, 'networks': 'none',
                           'host': VMW}}
        if tags:
            body['server']['tags'] = list(tags)
        created = api.post_server(body)
        server = self._wait_for_state_change(created, 'ACTIVE')
        self.assertEqual(VMW, server['OS-EXT-SRV-ATTR:host'])
        return server

    def faults(self, server):
        ctxt = self.ctxt.elevated()
        with nova_base.nova_context.target_cell(
                ctxt, self.cell_mappings['cell1']) as cctxt:
            found = objects.InstanceFaultList.get_by_instance_uuids(
                cctxt, [server['id']])
        # Nova keeps the message of its own exceptions, the class name of
        # others (their text goes to the details).
        return ['%s\n%s' % (f.message, f.details or '') for f in found]

    def events(self, server, action):
        actions = [a for a in self.api.get_instance_actions(server['id'])
                   if a['action'] == action]
        detail = self.api.get_instance_action_details(
            server['id'], actions[0]['request_id'])
        return detail['events']

    def policy_notifications(self):
        return [n for n in self.notifier.notifications
                if n.event_type == cadf.EVENT_TYPE]


def admission_paste_config(folder):
    """Nova's api-paste.ini with xhvpolicy after keystonecontext.

    As doc/source/policy.rst tells operators.
    """
    import sys

    with open(os.path.join(sys.prefix, 'etc', 'nova',
                           'api-paste.ini')) as f:
        text = f.read()
    assert text.count(' keystonecontext ') == 2, 'Nova changed its pipelines'
    text = text.replace(' keystonecontext ', ' keystonecontext xhvpolicy ')
    text += ('\n[filter:xhvpolicy]\npaste.filter_factory = '
             'nova_xhv.api.admission:filter_factory\n')
    path = os.path.join(folder, 'api-paste.ini')
    with open(path, 'w') as f:
        f.write(text)
    return path


def _rmtree(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


class DriverBackstopTestCase(PolicyTestCase):
    """No policy filter in the scheduler: the driver alone enforces."""

    rules = [PCI_RULE]

    def test_member_move_of_pci_server_is_refused_before_power_off(self):
        self.start_both()
        server = self.boot_on_vmware(tags=['pci'])
        self.member_api.post_server_action(server['id'], {'migrate': None})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual(VMW, server['OS-EXT-SRV-ATTR:host'])
        # Never powered off: the guest kept running on its source.
        self.assertEqual('poweredOn', self.power_state(server))
        events = [e['event'] for e in self.events(server, 'migrate')]
        self.assertNotIn('xhv_power_off', events)
        self.assertIn('xhv_policy_deny:pci-admin-only', events)
        faults = nova_base.wait_for(lambda: self.faults(server), 30,
                                    what='the instance fault')
        self.assertIn('pci-admin-only', faults[0])
        self.assertIn('roles: member, reader', faults[0])
        denied = [n for n in self.policy_notifications()
                  if n.payload['outcome'] == 'failure']
        self.assertEqual('pci-admin-only', denied[0].payload['reason'][
            'reasonCode'])
        # The admin's move of the same server goes through.
        server = self._migrate_server(server)
        self.assertEqual(FAKE, server['OS-EXT-SRV-ATTR:host'])
        self._confirm_resize(server)

    def test_confined_project_cannot_boot_on_vmware_with_forced_host(self):
        # The computes read the policy when they start: confine this
        # test's project now that the harness has named it.
        self.write_policy('policy.yaml', [
            {'id': 'confined-to-kvm', 'template': 'project_placement',
             'match': {'projects': [self.api.project_id]},
             'parameters': {'families': ['kvm']}}])
        self.start_both()
        image_id, _raw = self.make_image('vmdk', {
            'vmware_disktype': 'streamOptimized'})
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1)
        # "nova:<host>" forces the host: the scheduler's filters never run.
        created = self.api.post_server({'server': {
            'name': 'forced', 'imageRef': image_id, 'flavorRef': flavor,
            'networks': 'none', 'availability_zone': 'nova:%s' % VMW}})
        server = self._wait_for_state_change(created, 'ERROR')
        self.assertIn('confined-to-kvm', server['fault']['message'])
        self.assertIn('may run on kvm only, not on vmware',
                      server['fault']['message'])
        self.assertFalse(self.hypervisor_guest_exists(server))


class DryrunTestCase(PolicyTestCase):

    rules = [{'id': 'no-moves-to-fake', 'template': 'move_matrix',
              'enforcement': 'dryrun',
              'parameters': {'allow': [{'from': 'fake', 'to': 'vmware'}]}},
             {'id': 'secure-boot-wanted', 'template': 'required_capabilities',
              'enforcement': 'warn', 'match': {'actions': ['move']},
              'parameters': {'capabilities': ['secure_boot']}}]

    def test_dryrun_rule_lets_the_move_through_and_notifies(self):
        self.start_both()
        server = self.boot_on_vmware()
        self.notifier.reset()
        server = self._migrate_server(server)
        self.assertEqual(FAKE, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('VERIFY_RESIZE', server['status'])
        found = [n for n in self.policy_notifications()
                 if 'no-moves-to-fake' in n.payload['reason']['reasonCode']]
        self.assertTrue(found, self.policy_notifications())
        payload = found[0].payload
        self.assertEqual('success', payload['outcome'])
        attachments = {a['name']: a['content']
                       for a in payload['attachments']}
        self.assertEqual('driver', attachments['enforcement_point'])
        self.assertEqual(64, len(attachments['policy_digest']))
        self.assertEqual(['no-moves-to-fake', 'secure-boot-wanted'],
                         attachments['rule_ids'])
        self.assertTrue(attachments['request_id'].startswith('req-'))
        # A warning is an instance action event too; a dryrun is not.
        events = [e['event'] for e in self.events(server, 'migrate')]
        self.assertIn('xhv_policy_warn:secure-boot-wanted', events)
        self.assertFalse([e for e in events if 'no-moves-to-fake' in e])
        self._confirm_resize(server)


class DigestMismatchTestCase(PolicyTestCase):

    rules = [{'id': 'anything-goes', 'template': 'move_matrix',
              'parameters': {'allow': [{'from': '*', 'to': '*'}]}}]

    def test_computes_with_different_policies_refuse_the_stage(self):
        self.start_compute(VMW, backend='vmware')
        # The destination's policy differs (one more rule): its digest too.
        other = self.write_policy('other.yaml', self.rules + [
            {'id': 'extra', 'template': 'move_matrix',
             'enforcement': 'warn', 'parameters': {'allow': []}}])
        self.flags(group='xhv_policy', policy_file=other)
        self.start_compute(FAKE, backend='fake')
        digests = {h: self.computes[h].manager.driver.policy.digest
                   for h in (VMW, FAKE)}
        self.assertNotEqual(digests[VMW], digests[FAKE])
        # Each compute publishes its digest in its node stats.
        with nova_base.nova_context.target_cell(
                self.ctxt, self.cell_mappings['cell1']) as cctxt:
            for host in (VMW, FAKE):
                node = objects.ComputeNodeList.get_all_by_host(cctxt,
                                                               host)[0]
                self.assertEqual(digests[host],
                                 node.stats['xhv_policy_digest'])
        server = self.boot_on_vmware()

        self.api.post_server_action(server['id'], {'migrate': None})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual(VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOn', self.power_state(server))
        faults = nova_base.wait_for(lambda: self.faults(server), 30,
                                    what='the instance fault')
        self.assertIn('policy digest mismatch', faults[0])
        self.assertIn(digests[FAKE][:16], faults[0])


class PolicyFilterTestCase(PolicyTestCase):

    scheduler_filter = True
    rules = [PCI_RULE,
             {'id': 'only-fake', 'template': 'project_placement',
              'parameters': {'families': ['fake']},
              'match': {'metadata': {'placement': 'fake-only'}}}]

    def test_filter_decides_per_host_class(self):
        self.start_both()
        # Two more computes of the fake class: still one decision a class.
        self.start_compute('fake2', backend='fake')
        self.start_compute('fake3', backend='fake')
        policy_filter = [
            f for f in self.scheduler_service.manager.host_manager
            .enabled_filters if type(f).__name__ == 'XHVPolicyFilter'][0]
        image_id, _raw = self.make_image('vmdk', {
            'vmware_disktype': 'streamOptimized'})
        before = policy_filter.decisions
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1)
        for _attempt in range(2):
            created = self.api.post_server({'server': {
                'name': 'placed', 'imageRef': image_id, 'flavorRef': flavor,
                'networks': 'none',
                'metadata': {'placement': 'fake-only'}}})
            server = self._wait_for_state_change(created, 'ACTIVE')
            self.assertIn(server['OS-EXT-SRV-ATTR:host'],
                          (FAKE, 'fake2', 'fake3'))
            self._delete_server(server)
        # vmware and fake: 2 classes for 4 hosts, per request.
        self.assertEqual(4, policy_filter.decisions - before)

    def test_member_move_of_pci_server_finds_no_host(self):
        self.start_both()
        server = self.boot_on_vmware(tags=['pci'])  # forced: admin, host
        self.member_api.post_server_action(server['id'], {'migrate': None})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual(VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOn', self.power_state(server))


class OperatorCommandsTestCase(PolicyTestCase):
    """xhv-policy explain and audit over the harness's databases."""

    rules = [PCI_RULE]

    def test_explain_names_the_rule_and_the_roles_that_pass(self):
        from nova_xhv.cmd import policy as policy_cmd
        from nova_xhv.policy import enforcer

        self.start_both()
        server = self.boot_on_vmware(tags=['pci'])
        checker = enforcer.Enforcer(self.policy_file, self.policy_root,
                                    point='explain')
        document, decision = policy_cmd.explain(
            self.ctxt, checker, server['id'], FAKE, 'move', ['member'])
        self.assertFalse(decision.allowed)
        self.assertEqual(['pci-admin-only'], decision.rule_ids)
        self.assertEqual('vmware', document['source']['family'])
        self.assertEqual('fake', document['destination']['family'])
        self.assertEqual(['pci'], document['server']['tags'])
        _document, decision = policy_cmd.explain(
            self.ctxt, checker, server['id'], FAKE, 'move', ['admin'])
        self.assertTrue(decision.allowed)

    def test_audit_finds_the_server_seeded_before_the_rule(self):
        from nova_xhv.cmd import policy as policy_cmd
        from nova_xhv.policy import enforcer

        self.start_both()
        seeded = self.boot_on_vmware()
        checker = enforcer.Enforcer(self.policy_file, self.policy_root,
                                    point='audit')
        self.assertEqual([], policy_cmd.audit(self.ctxt, checker))
        # The rule arrives after the server: the project may run on fake
        # only.
        confined = self.write_policy('later.yaml', self.rules + [
            {'id': 'project-on-fake', 'template': 'project_placement',
             'match': {'projects': [self.api.project_id]},
             'parameters': {'families': ['fake']}}])
        checker = enforcer.Enforcer(confined, self.policy_root,
                                    point='audit')
        found = policy_cmd.audit(self.ctxt, checker)
        self.assertEqual([seeded['id']], [i.uuid for i, _h, _d in found])
        _instance, host, decision = found[0]
        self.assertEqual('vmware', host['family'])
        self.assertEqual(['project-on-fake'], [v.rule for v in decision.deny])


class AdmissionTestCase(PolicyTestCase):
    """nova-api's own WSGI pipeline with XHV's admission filter."""

    admission = True
    rules = [PCI_RULE]

    def test_member_migrate_answers_403_with_the_rule(self):
        self.start_both()
        server = self.boot_on_vmware(tags=['pci'])
        error = self.assertRaises(
            client.OpenStackApiException, self.member_api.post_server_action,
            server['id'], {'migrate': None})
        self.assertEqual(403, error.response.status_code)
        message = error.response.json()['forbidden']['message']
        self.assertIn('pci-admin-only', message)
        self.assertIn('wherever it would go', message)
        # Refused before any work: no migration, still running on vSphere.
        self.assertEqual([], self.api.get_migrations())
        server = self.api.get_server(server['id'])
        self.assertEqual(('ACTIVE', VMW), (server['status'],
                                           server['OS-EXT-SRV-ATTR:host']))
        # Naming the destination: the same answer, for that host.
        error = self.assertRaises(
            client.OpenStackApiException, self.member_api.post_server_action,
            server['id'], {'migrate': {'host': FAKE}})
        self.assertEqual(403, error.response.status_code)
        message = error.response.json()['forbidden']['message']
        self.assertIn('pci-admin-only', message)
        self.assertIn('vmware -> fake', message)
        # The admin passes the same gate and the move happens.
        server = self._migrate_server(server)
        self.assertEqual(FAKE, server['OS-EXT-SRV-ATTR:host'])
        self._confirm_resize(server)

    def test_unreadable_requests_are_nova_s_to_answer(self):
        self.start_both()
        server = self.boot_on_vmware(tags=['pci'])
        for body in (b'{"migrate": ', b'[1, 2]', b'{"migrate": null, '
                                                 b'"resize": {}}'):
            response = self.member_api.api_request(
                '/servers/%s/action' % server['id'], method='POST',
                body=body)
            self.assertEqual(400, response.status_code, response.text)
        response = self.member_api.api_request(
            '/servers/%s/action' % ('0' * 36), method='POST',
            body=b'{"migrate": null}')
        self.assertEqual(404, response.status_code, response.text)
