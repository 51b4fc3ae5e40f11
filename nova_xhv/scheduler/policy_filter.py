"""XHVPolicyFilter: the XHV policy decides where a server may go.

One decision per host CLASS, not per host: hosts that look the same to
the policy (family, aggregates and their metadata, availability zone,
capabilities, accepted families, policy digest; everything but the name)
get the same answer, so a request costs one Rego query per class however
many hosts each class holds.  Rules that single out one host by name are
the driver's to enforce (its backstop sees the real host).

What the filter cannot see it does not guess: the server's tags and
metadata come from the instance (moves) or its build request (boots).

Enable it with::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = nova_xhv.scheduler.policy_filter.XHVPolicyFilter
    enabled_filters = ...,XHVPolicyFilter

It carries the default rules of ``[xhv] accepted_source_families`` and
``new_boot_families`` too, so it replaces XHVMoveFilter.
"""

from nova import objects
from nova.scheduler import filters
from oslo_config import cfg
from oslo_log import log as logging

from nova_xhv.policy import enforcer as policy_enforcer
from nova_xhv.policy import inputs
from nova_xhv.policy import nova_input

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class XHVPolicyFilter(filters.BaseHostFilter):
    """Hosts whose class the XHV policy allows for this request."""

    RUN_ON_REBUILD = False

    def __init__(self):
        super().__init__()
        # nova-scheduler imports nothing else of XHV that registers
        # [xhv_policy] (as the admission filter does for nova-api).
        import nova_xhv.conf  # noqa: F401
        self.policy = policy_enforcer.Enforcer.from_conf(
            CONF.xhv_policy, 'scheduler')
        # For tests and the benchmark: Rego queries made so far.
        self.decisions = 0
        # Host states seen -> (class key, view); see host_class_of_state.
        self._classes = {}

    def host_passes(self, host_state, spec_obj):
        return bool(list(self.filter_all([host_state], spec_obj)))

    def filter_all(self, filter_obj_list, spec_obj):
        host_states = list(filter_obj_list)
        if not host_states:
            return
        request = self._request(spec_obj)
        classes = {}
        keys = []
        for host_state in host_states:
            key, destination = nova_input.host_class_of_state(
                host_state, self._classes)
            classes.setdefault(key, destination)
            keys.append(key)
        # One query per class; which rules apply to the request is asked
        # once for all of them (Policy.decide_each).
        decisions = self.policy.decide_each(request, list(classes.values()))
        self.decisions += len(decisions)
        verdicts = dict(zip(classes, decisions))
        for key, decision in verdicts.items():
            if not decision.allowed:
                # Not final (one class of many): logged here, reported by
                # the driver when it lands.
                LOG.info('XHVPolicyFilter: %s hosts refused for %s of %s: '
                         '%s', classes[key].get('family'), request['action'],
                         request['server'].get('uuid'), decision.reason())
        for host_state, key in zip(host_states, keys):
            if verdicts[key].allowed:
                yield host_state

    def _request(self, spec_obj):
        """The input document without its destination."""
        context = getattr(spec_obj, '_context', None)
        uuid = spec_obj.instance_uuid if 'instance_uuid' in spec_obj \
            else None
        moving = bool('ignore_hosts' in spec_obj and spec_obj.ignore_hosts)
        instance = None
        source = None
        if context is not None and uuid:
            instance = _instance(context, uuid, moving)
        if moving and context is not None:
            try:
                source = nova_input.host_in_its_cell(
                    context, spec_obj.ignore_hosts[0])
            except Exception as error:
                LOG.warning('XHVPolicyFilter cannot read the source host '
                            '%s: %s', spec_obj.ignore_hosts[0], error)
                source = inputs.host(spec_obj.ignore_hosts[0])
        action = 'move' if moving else 'boot'
        if moving and instance is not None and 'flavor' in spec_obj and \
                spec_obj.flavor.flavorid != instance.flavor.flavorid:
            action = 'resize'
        return inputs.document(
            action, nova_input.caller_of(context),
            nova_input.server_of_spec(spec_obj, instance), source, None,
            point='scheduler', request_id=nova_input.request_id_of(context))


def _instance(context, uuid, moving):
    try:
        if moving:
            return nova_input.instance_in_its_cell(context, uuid)
        return objects.BuildRequest.get_by_instance_uuid(context,
                                                         uuid).instance
    except Exception as error:
        LOG.debug('XHVPolicyFilter: no instance record for %s: %s', uuid,
                  error)
        return None
