"""Audit of policy decisions inside Nova: notifications and action events.

Every decision that names a rule (deny, warn or dryrun) is sent on Nova's
notification transport as ``xhv.policy.decision`` with a CADF payload
(nova_xhv.policy.cadf), publisher ``xhv-policy.<host>``.  Denials and
warnings are also instance action events of the request's action
(``openstack server event show``): ``xhv_policy_deny:<rule ids>`` ending
in Error with the reason as its details, ``xhv_policy_warn:<rule ids>``
ending in Success.
"""

from nova import context as nova_context
from nova import exception
from nova import objects
from nova import rpc
from oslo_log import log as logging

from nova_xhv.policy import cadf

LOG = logging.getLogger(__name__)


class PolicyRefused(exception.NovaException):
    """An action the XHV policy denies; the message names the rules."""

    msg_fmt = '%(reason)s'
    code = 403


def reporter(host):
    """An Enforcer reporter for an enforcement point on ``host``.

    ``host``: the host name, or a callable returning it (a compute knows
    its name only once its service starts).
    """

    def report(context, point, document, decision):
        name = host() if callable(host) else host
        notify(context, name, point, document, decision)
        server = (document.get('server') or {}).get('uuid')
        if context is not None and server and point in ('driver',
                                                        'scheduler'):
            record_events(context, name, server, decision)
    return report


def notify(context, host, point, document, decision):
    if rpc.LEGACY_NOTIFIER is None:
        return  # a command-line tool without a transport
    notifier = rpc.LEGACY_NOTIFIER.prepare(
        publisher_id='xhv-policy.%s' % host)
    payload = cadf.decision_event(document, decision, point, host)
    send = notifier.warn if decision.deny or decision.warn else notifier.info
    send(context or nova_context.get_admin_context(), cadf.EVENT_TYPE,
         payload)


def event_name(enforcement, violations):
    return ('xhv_policy_%s:%s' % (enforcement, ','.join(sorted(
        {v.rule for v in violations}))))[:255]


def record_events(context, host, instance_uuid, decision):
    """Instance action events of denials and warnings (best effort)."""
    for kind in ('deny', 'warn'):
        violations = getattr(decision, kind)
        if not violations:
            continue
        name = event_name(kind, violations)
        try:
            objects.InstanceActionEvent.event_start(
                context, instance_uuid, name, want_result=False, host=host)
            if kind == 'deny':
                objects.InstanceActionEvent.event_finish_with_failure(
                    context, instance_uuid, name,
                    exc_val=decision.reason(), exc_tb=decision.reason(),
                    want_result=False)
            else:
                objects.InstanceActionEvent.event_finish(
                    context, instance_uuid, name, want_result=False)
        except Exception as error:
            # No action to attach to (an internal request): the log line
            # and the notification still carry the decision.
            LOG.debug('No instance action event for %s: %s', name, error)
