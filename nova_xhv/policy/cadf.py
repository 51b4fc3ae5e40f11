"""A policy decision as a CADF event (pycadf), for oslo.messaging.

Pure of Nova: ``decision_event(document, decision, point, observer)``
returns the payload every enforcement point notifies with event type
``xhv.policy.decision``: outcome ``failure`` for a denial, ``success``
otherwise; the rule ids, enforcement, digest, request id and point ride
in the reason and in attachments.
"""

import warnings

from pycadf import attachment
from pycadf import cadftaxonomy
from pycadf import cadftype
from pycadf import eventfactory
from pycadf import reason as cadf_reason
from pycadf import resource

EVENT_TYPE = 'xhv.policy.decision'


def decision_event(document, decision, point, observer):
    with warnings.catch_warnings():
        # pycadf warns on every id that is not a uuid (host names, ids of
        # test clouds); the ids are still what they are.
        warnings.simplefilter('ignore', UserWarning)
        return _event(document, decision, point, observer)


def _event(document, decision, point, observer):
    caller = document.get('caller') or {}
    server = document.get('server') or {}
    initiator = resource.Resource(
        typeURI=cadftaxonomy.ACCOUNT_USER,
        id=caller.get('user_id') or cadftaxonomy.UNKNOWN)
    if caller.get('project_id'):
        initiator.project_id = caller['project_id']
    target = resource.Resource(typeURI='compute/machine',
                               id=server.get('uuid') or
                               cadftaxonomy.UNKNOWN)
    observing = resource.Resource(typeURI='service/compute',
                                  id=observer or cadftaxonomy.UNKNOWN,
                                  name='xhv-policy-%s' % point)
    event = eventfactory.EventFactory().new_event(
        eventType=cadftype.EVENTTYPE_ACTIVITY,
        outcome=(cadftaxonomy.OUTCOME_FAILURE if decision.deny
                 else cadftaxonomy.OUTCOME_SUCCESS),
        action='%s/xhv-%s' % (cadftaxonomy.ACTION_EVALUATE,
                              document.get('action')),
        initiator=initiator, target=target, observer=observing,
        reason=cadf_reason.Reason(
            reasonType='xhv-policy',
            reasonCode=','.join(v.rule for v in decision.deny) or
            ','.join(decision.rule_ids)))
    for name, value in (
            ('decision', decision.to_dict()),
            ('rule_ids', decision.rule_ids),
            ('policy_digest', decision.digest),
            ('request_id', document.get('request_id')),
            ('enforcement_point', point),
            ('source', document.get('source')),
            ('destination', document.get('destination'))):
        if value is None:
            continue
        event.add_attachment(attachment.Attachment(
            typeURI='xhv/%s' % name, content=value, name=name))
    return event.as_dict()
