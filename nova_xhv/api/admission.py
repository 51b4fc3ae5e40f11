"""nova-api admission: a forbidden action answers 403 with the rule id.

A paste filter placed right after ``keystonecontext`` (it needs the
request context) in nova-api's pipelines::

    [filter:xhvpolicy]
    paste.filter_factory = nova_xhv.api.admission:filter_factory

    [composite:openstack_compute_api_v21]
    keystone = ... authtoken keystonecontext xhvpolicy osapi_compute_app_v21

It looks only at the requests that place or move a server -- ``POST
/servers`` and the ``migrate``, ``resize``, ``evacuate``,
``os-migrateLive`` and ``unshelve`` actions -- and asks the policy before
Nova does any work.  Where the request names no destination, the answer
is 403 only when the policy denies EVERY family that could be chosen (the
scheduler's filter and the driver decide the rest).  Anything it cannot
read (a body that is not JSON, an unknown server) passes on unchanged:
Nova answers it as without XHV.

The classes of host the cloud has are read from the database (every
cell's compute nodes, the aggregates) and reused for ``CLASSES_TTL``
seconds to let requests through; a refusal is not: before answering 403
the filter reads the classes again unless it read them less than
``REFUSAL_FRESHNESS`` (1 s) ago, so a compute added or an aggregate changed
is seen within a second, and a caller repeating refused requests costs at
most one read a second.  A stale list can only let a
request on to Nova, where the scheduler's filter and the driver decide
with the hosts as they are.
"""

import json
import re
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging
import webob
import webob.dec

from nova_xhv.policy import enforcer as policy_enforcer
from nova_xhv.policy import inputs

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

_ACTION_PATH = re.compile(r'/servers/([0-9a-fA-F-]{32,36})/action/?$')
_CREATE_PATH = re.compile(r'/servers/?$')
# Server action -> (policy action, key of a named host in its body).
ACTIONS = {'migrate': ('move', 'host'), 'resize': ('resize', None),
           'evacuate': ('evacuate', 'host'),
           'os-migrateLive': ('live_migrate', 'host'),
           'unshelve': ('unshelve', 'host')}
MAX_BODY = 1024 * 1024
# Seconds the host classes of the cloud are reused to let requests through
# (never to refuse one).
CLASSES_TTL = 60.0
# Seconds a list of classes may be old for a refusal to rest on it.
REFUSAL_FRESHNESS = 1.0


def filter_factory(global_conf, **local_conf):
    def build(app):
        return PolicyAdmission(app)
    return build


class PolicyAdmission(object):

    def __init__(self, application):
        import nova_xhv.conf  # noqa: F401  registers [xhv_policy]
        self.application = application
        self.policy = policy_enforcer.Enforcer.from_conf(
            CONF.xhv_policy, 'api', reporter=_reporter())
        self._classes = None
        self._classes_at = 0.0
        self._lock = threading.Lock()
        # Times the classes were read from the database (tests, benchmark).
        self.classes_read = 0

    @webob.dec.wsgify
    def __call__(self, req):
        if req.method != 'POST':
            return self.application
        try:
            refusal = self._refusal(req)
        except Exception:
            # Never a traceback from the admission check: Nova decides.
            LOG.exception('XHV policy admission check failed; passing the '
                          'request on to Nova')
            refusal = None
        if refusal is None:
            return self.application
        return _forbidden(refusal)

    def _refusal(self, req):
        path = req.path_info
        action_match = _ACTION_PATH.search(path)
        if not action_match and not _CREATE_PATH.search(path):
            return None
        context = req.environ.get('nova.context')
        if context is None or (req.content_length or 0) > MAX_BODY:
            return None
        try:
            body = json.loads(req.body or b'null')
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict) or len(body) != 1:
            return None
        (name, args), = body.items()
        if action_match:
            if name not in ACTIONS:
                return None
            return self._check_action(context, action_match.group(1),
                                      name, args)
        if name == 'server' and isinstance(args, dict):
            return self._check_boot(context, args)
        return None

    # -- requests ------------------------------------------------------------

    def _check_action(self, context, server_uuid, name, args):
        from nova_xhv.policy import nova_input

        action, host_key = ACTIONS[name]
        try:
            instance = nova_input.instance_in_its_cell(context, server_uuid)
        except Exception:
            return None  # Nova answers 404 itself
        source = None
        if instance.host and action != 'unshelve':
            source = nova_input.host_in_its_cell(context, instance.host)
        host = args.get(host_key) if host_key and isinstance(
            args, dict) else None
        server = nova_input.server_of_instance(instance)
        return self._decide_anywhere(context, action, server, source,
                                     host if isinstance(host, str) else None)

    def _check_boot(self, context, args):
        host = args.get('host')
        zone = args.get('availability_zone')
        if not host and isinstance(zone, str) and ':' in zone:
            host = zone.split(':', 1)[1].split(':')[0] or None
        metadata = args.get('metadata')
        tags = args.get('tags')
        server = inputs.server(
            project_id=context.project_id,
            tags=tags if isinstance(tags, list) else (),
            metadata=metadata if isinstance(metadata, dict) else {})
        return self._decide_anywhere(context, 'boot', server, None,
                                     host if isinstance(host, str) else None)

    def _decide_anywhere(self, context, action, server, source, host):
        """The refusal, or None when some destination could be allowed."""
        from nova_xhv.policy import nova_input

        if host:
            try:
                destinations = [nova_input.host_in_its_cell(context, host)]
            except Exception:
                return None  # an unknown host: Nova answers
        request = inputs.document(
            action, nova_input.caller_of(context), server, source, None,
            point='api', request_id=nova_input.request_id_of(context))
        if host:
            document = dict(request, destination=destinations[0])
            refusals = [self.policy.decide(document, context)]
        else:
            # Nothing named: every class of host the cloud has, read again
            # before a refusal (see the module's doc).
            for fresh in (False, True):
                destinations, read_now = self._host_classes(context, fresh)
                if not destinations:
                    return None
                # One query per class; which rules apply is asked once.
                refusals = self.policy.decide_each(request, destinations)
                if any(decision.allowed for decision in refusals) or \
                        read_now:
                    break
            document = dict(request, destination=destinations[0])
        if any(decision.allowed for decision in refusals):
            return None
        if not host:
            self.policy.log(document, refusals[0])
            if self.policy.reporter is not None:
                self.policy.reporter(context, 'api', document, refusals[0])
        seen = {}
        for decision in refusals:
            for violation in decision.deny:
                seen.setdefault(violation.rule, violation.msg)
        if host:
            return refusals[0].reason()
        return 'refused by XHV policy rule %s (wherever it would go)' % (
            '; '.join('%s: %s' % kv for kv in sorted(seen.items())))

    def _host_classes(self, context, fresh=False):
        """(the cloud's host classes, whether fresh enough to refuse).

        Read again when older than CLASSES_TTL, or than REFUSAL_FRESHNESS
        when ``fresh``.
        """
        with self._lock:
            if self._classes is not None:
                age = time.monotonic() - self._classes_at
                if age < REFUSAL_FRESHNESS:
                    return self._classes, True
                if not fresh and age < CLASSES_TTL:
                    return self._classes, False
        classes = host_classes(context)
        with self._lock:
            self._classes, self._classes_at = classes, time.monotonic()
            self.classes_read += 1
        return classes, True


def host_classes(context):
    """One HOST (without name) per class of the cloud's compute nodes.

    Reads the compute node rows of every cell through Nova's DB API, not
    as ComputeNode objects: building 1,000 objects costs 5 times the
    query, and the policy needs three columns of each.
    """
    from nova import context as nova_context
    from nova.db.main import api as main_db
    from nova import objects

    from nova_xhv.policy import nova_input

    by_host = {}
    for aggregate in objects.AggregateList.get_all(context):
        for host in aggregate.hosts or ():
            by_host.setdefault(host, []).append(aggregate)
    views = {}
    found = {}
    for cell in objects.CellMappingList.get_all(context):
        if cell.is_cell0():
            continue
        with nova_context.target_cell(context, cell) as cctxt:
            rows = main_db.compute_node_get_all(cctxt)
        for row in rows:
            # Hosts alike (same stats text, type and aggregates) share
            # one view: the view is a function of these alone.
            aggregates = by_host.get(row['host'], ())
            raw = (row['hypervisor_type'], row['stats'] or '',
                   tuple(a.id for a in aggregates))
            if raw in views:
                continue
            stats = _stats(row)
            names, zone = nova_input.aggregates_view(aggregates)
            view = inputs.host_from_stats(None, stats,
                                          row['hypervisor_type'], names,
                                          zone)
            views[raw] = view
            found.setdefault(inputs.host_class(view), view)
    return list(found.values())


def _stats(row):
    try:
        stats = json.loads(row['stats'] or '{}')
    except ValueError:
        return {}
    return stats if isinstance(stats, dict) else {}


def _reporter():
    try:
        from nova_xhv.policy import nova_report
    except ImportError:
        return None
    return nova_report.reporter(lambda: CONF.host)


def _forbidden(message):
    body = json.dumps({'forbidden': {'code': 403, 'message': message}})
    return webob.Response(status=403, body=body.encode('utf-8'),
                          content_type='application/json', charset=None)
