"""``[xhv_policy]``: the one security policy of an XHV cloud.

Read by every node that enforces it (nova-api's admission filter, the
scheduler's XHVPolicyFilter, every XHV compute); see
doc/source/policy.rst.
"""

from oslo_config import cfg

policy_group = cfg.OptGroup(
    'xhv_policy', title='XHV policy',
    help='Where the XHV policy lives and what happens when it cannot be '
         'loaded. The same files belong on every node.')

policy_opts = [
    cfg.StrOpt('policy_file', default='/etc/xhv/policy.yaml',
               help='YAML file of rule instances (templates shipped by '
                    'XHV, with parameters and enforcement deny, warn or '
                    'dryrun). Missing: only the default rules, which carry '
                    'the [xhv] options accepted_source_families and '
                    'new_boot_families.'),
    cfg.StrOpt('policy_dir', default='/etc/xhv/policy.d',
               help='Folder of the operator\'s own Rego v1 modules '
                    '(*.rego, adding to data.xhv.deny / data.xhv.warn); '
                    '*_test.rego files hold test_* rules for '
                    '"xhv-policy test".'),
    cfg.BoolOpt('fail_closed', default=True,
                help='When the policy cannot be loaded or evaluated: refuse '
                     'every decision (True, rule xhv-policy-unavailable) '
                     'or allow it with a warning (False). Said in the log '
                     'when the service starts.'),
    cfg.ListOpt('capabilities', default=[],
                help='Capabilities this compute declares to the policy '
                     'besides those XHV finds itself (uefi; exchange, '
                     'exchange_tls and exchange_tls_verified from the '
                     '[xhv] exchange options), e.g. secure_boot, '
                     'encrypted_disks. Rules of the required_capabilities '
                     'template read them.'),
    cfg.IntOpt('decision_cache_size', default=1024, min=0,
               help='Decisions each service remembers, keyed by exactly the '
                    'input values the policy\'s modules read (and the '
                    'policy digest), so a request like an earlier one is '
                    'answered without the Rego engine. 0 turns it off. A '
                    'policy calling a non-deterministic built-in '
                    '(time.now_ns, rand.*, http.send, ...) is never '
                    'cached.'),
    cfg.BoolOpt('notify', default=True,
                help='Send every decision that names a rule as an '
                     'oslo.messaging notification (CADF payload).'),
]


def list_opts():
    return [(policy_group, policy_opts)]
