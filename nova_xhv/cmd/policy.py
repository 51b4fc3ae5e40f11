"""xhv-policy: check, explain, audit and test the XHV policy.

    xhv-policy [--config-file nova.conf] [--policy-file F] [--policy-dir D]
               check | test | explain --server S --host H | audit [--json]

``check``    validates the files (YAML, templates and parameters, Rego v1,
             compilation) and prints the digest; exit 1 when invalid.
``test``     runs the operator's ``*_test.yaml`` case tables and the
             ``test_*`` rules of ``*_test.rego`` modules (in a child
             process: a crash of the Rego engine is reported, not shared);
             exit 1 when one fails.
``explain``  would this server be allowed on this host (``--action move``
             by default, as ``--roles``), and by which rules; exit 1 when
             denied.  Reads Nova's databases (``--config-file``).
``audit``    every server that breaks the policy where it runs now; exit 1
             when one does.  Reads Nova's databases.

The policy files default to ``[xhv_policy] policy_file`` / ``policy_dir``
of the configuration files.  See doc/source/policy.rst.
"""

import argparse
import json
import subprocess
import sys
import warnings

RUN_TESTS = '_run-tests'


def _conf(config_files, with_nova):
    import nova_xhv.conf  # registers [xhv_policy] on Nova's CONF

    if with_nova:
        from nova import config as nova_config
        from nova import objects

        args = ['xhv-policy']
        for path in config_files:
            args += ['--config-file', path]
        nova_config.parse_args(args, configure_db=True)
        objects.register_all()
        return nova_config.CONF
    conf = nova_xhv.conf.CONF
    args = []
    for path in config_files:
        args += ['--config-file', path]
    conf(args, project='nova', prog='xhv-policy',
         default_config_files=[] if config_files else None)
    return conf


def _paths(args, conf):
    return (args.policy_file or conf.xhv_policy.policy_file,
            args.policy_dir or conf.xhv_policy.policy_dir)


def check(policy_file, policy_dir, out=sys.stdout):
    from nova_xhv.policy import engine

    try:
        policy = engine.Policy.from_files(policy_file, policy_dir)
    except engine.PolicyError as error:
        print('INVALID policy (%s, %s/*.rego):' % (policy_file, policy_dir),
              file=out)
        for line in error.errors:
            print('  - %s' % line, file=out)
        return 1
    counts = policy.counts()
    print('valid policy %s' % policy.digest, file=out)
    print('  %d rules (%d deny, %d warn, %d dryrun), %d operator modules, '
          '%d test modules' % (len(policy.rules), counts['deny'],
                               counts['warn'], counts['dryrun'],
                               len(policy.operator_modules),
                               len(policy.test_modules)), file=out)
    for rule in policy.rules:
        print('  %-8s %-30s %s' % (rule['enforcement'], rule['id'],
                                   rule['template']), file=out)
    return 0


def run_tests_here(policy_file, policy_dir):
    from nova_xhv.policy import engine

    policy = engine.Policy.from_files(policy_file, policy_dir)
    # Only here: a broken test table must not stop a service.
    policy.case_files = engine.read_case_files(policy_dir)
    print(json.dumps([{'module': m, 'rule': r, 'passed': p, 'detail': d}
                      for m, r, p, d in policy.run_cases()
                      + policy.run_tests()]))
    return 0


def test(policy_file, policy_dir, out=sys.stdout):
    """Run the operator's test_* rules in a child process."""
    result = subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.policy', '--policy-file',
         policy_file or '', '--policy-dir', policy_dir or '', RUN_TESTS],
        capture_output=True, text=True)
    if result.returncode < 0:
        print('the Rego engine crashed (signal %d) running the tests; '
              'rego-cpp 1.5 is known to crash on some "with" expressions'
              % -result.returncode, file=out)
        return 2
    if result.returncode:
        print((result.stderr.strip().splitlines() or ['failed'])[-1],
              file=out)
        return 2
    results = json.loads(result.stdout.strip().splitlines()[-1])
    if not results:
        print('no tests found: test_* rules in %s/*_test.rego or cases '
              'in %s/*_test.yaml' % (policy_dir, policy_dir), file=out)
        return 1
    failed = [r for r in results if not r['passed']]
    for r in results:
        print('%s %s (%s)%s' % ('PASS' if r['passed'] else 'FAIL', r['rule'],
                                r['module'], '' if r['passed']
                                else ': %s' % r['detail']), file=out)
    print('%d passed, %d failed' % (len(results) - len(failed),
                                    len(failed)), file=out)
    return 1 if failed else 0


# -- with Nova's databases ---------------------------------------------------

def explain(context, enforcer, server_uuid, host, action='move', roles=None,
            project_id=None):
    """(input document, Decision) for ``server_uuid`` on ``host``."""
    from nova_xhv.policy import inputs
    from nova_xhv.policy import nova_input

    instance = nova_input.instance_in_its_cell(context, server_uuid)
    source = (nova_input.host_in_its_cell(context, instance.host)
              if instance.host else None)
    destination = nova_input.host_in_its_cell(context, host)
    caller = inputs.caller(roles or ['member'],
                           project_id or instance.project_id)
    document = inputs.document(
        action, caller, nova_input.server_of_instance(instance),
        source if action != 'boot' else None, destination,
        point='explain')
    return document, enforcer.decide(document, report=False)


def audit(context, enforcer):
    """[(instance, host, Decision)] of servers that break the policy now."""
    from nova import context as nova_context
    from nova import objects

    from nova_xhv.policy import inputs
    from nova_xhv.policy import nova_input

    found = []
    for cell in objects.CellMappingList.get_all(context):
        if cell.is_cell0():
            continue
        with nova_context.target_cell(context, cell) as cctxt:
            instances = objects.InstanceList.get_by_filters(
                cctxt, {'deleted': False},
                expected_attrs=['metadata', 'system_metadata', 'tags',
                                'flavor'])
            hosts = {}
            for instance in instances:
                if not instance.host:
                    continue
                if instance.host not in hosts:
                    hosts[instance.host] = nova_input.host_of_node(
                        cctxt, instance.host)
                document = inputs.document(
                    'audit', inputs.caller((), instance.project_id),
                    nova_input.server_of_instance(instance), None,
                    hosts[instance.host], point='audit')
                decision = enforcer.decide(document, report=False)
                if decision.deny or decision.warn:
                    found.append((instance, hosts[instance.host], decision))
    return found


def _print_explain(document, decision, as_json, out):
    if as_json:
        print(json.dumps({'input': document,
                          'decision': decision.to_dict()}, indent=2),
              file=out)
        return
    server = document['server']
    dest = document['destination'] or {}
    print('%s of server %s to %s (%s) by roles %s: %s' % (
        document['action'], server['uuid'], dest.get('host'),
        dest.get('family'), ', '.join(document['caller']['roles']) or '-',
        'ALLOWED' if decision.allowed else 'DENIED'), file=out)
    for kind in ('deny', 'warn', 'dryrun'):
        for violation in getattr(decision, kind):
            print('  %-6s %s: %s' % (kind, violation.rule, violation.msg),
                  file=out)
    if not decision.rule_ids:
        print('  no rule applies', file=out)
    print('  policy %s' % decision.digest, file=out)


def _print_audit(found, as_json, out):
    rows = [{'server': i.uuid, 'name': i.display_name, 'host': i.host,
             'family': host['family'], 'project_id': i.project_id,
             'deny': [v.text() for v in d.deny],
             'warn': [v.text() for v in d.warn]} for i, host, d in found]
    if as_json:
        print(json.dumps(rows, indent=2), file=out)
        return
    for row in rows:
        print('%s (%s) on %s (%s):' % (row['server'], row['name'],
                                       row['host'], row['family']), file=out)
        for text in row['deny']:
            print('  deny %s' % text, file=out)
        for text in row['warn']:
            print('  warn %s' % text, file=out)
    broken = sum(1 for r in rows if r['deny'])
    print('%d server(s) break the policy' % broken, file=out)


def parser():
    top = argparse.ArgumentParser(
        prog='xhv-policy', description='Check, explain, audit and test '
        'the XHV policy (doc/source/policy.rst).')
    top.add_argument('--config-file', action='append', default=[],
                     help='nova.conf (repeatable); explain and audit read '
                          'Nova\'s databases through it')
    top.add_argument('--policy-file', help='default: [xhv_policy] '
                                           'policy_file')
    top.add_argument('--policy-dir', help='default: [xhv_policy] policy_dir')
    sub = top.add_subparsers(dest='command', required=True)
    sub.add_parser('check', help='validate the files, print the digest')
    sub.add_parser('test', help='run the operator\'s test_* rules')
    sub.add_parser(RUN_TESTS, help=argparse.SUPPRESS)
    explain_cmd = sub.add_parser('explain', help='would this be allowed?')
    explain_cmd.add_argument('--server', required=True)
    explain_cmd.add_argument('--host', required=True)
    explain_cmd.add_argument('--action', default='move', choices=(
        'boot', 'move', 'resize', 'evacuate', 'live_migrate', 'unshelve'))
    explain_cmd.add_argument('--roles', default='member',
                             help='comma list of the caller\'s roles')
    explain_cmd.add_argument('--project', help='the caller\'s project '
                                               '(default: the server\'s)')
    explain_cmd.add_argument('--json', action='store_true')
    audit_cmd = sub.add_parser('audit', help='servers that break the policy')
    audit_cmd.add_argument('--json', action='store_true')
    return top


def main(argv=None, out=sys.stdout):
    warnings.simplefilter('ignore')  # Nova's import-time warnings
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == RUN_TESTS:
        return run_tests_here(args.policy_file or None,
                              args.policy_dir or None)
    with_nova = args.command in ('explain', 'audit')
    conf = _conf(args.config_file, with_nova)
    policy_file, policy_dir = _paths(args, conf)
    if args.command == 'check':
        return check(policy_file, policy_dir, out)
    if args.command == 'test':
        return test(policy_file, policy_dir, out)
    from nova import context as nova_context

    from nova_xhv.policy import enforcer as policy_enforcer
    enforcer = policy_enforcer.Enforcer(policy_file, policy_dir,
                                        conf.xhv_policy.fail_closed,
                                        point=args.command)
    context = nova_context.get_admin_context()
    if args.command == 'explain':
        document, decision = explain(
            context, enforcer, args.server, args.host, args.action,
            [r for r in args.roles.split(',') if r], args.project)
        _print_explain(document, decision, args.json, out)
        return 0 if decision.allowed else 1
    found = audit(context, enforcer)
    _print_audit(found, args.json, out)
    return 1 if any(d.deny for _i, _h, d in found) else 0


if __name__ == '__main__':
    sys.exit(main())
