"""What an enforcement point holds: the loaded policy, or why not.

``Enforcer(conf_group, point)`` loads the policy once (nova-api, the
scheduler filter, each compute's driver) and says in the log what it
loaded -- digest, rule counts, fail closed or open.  ``decide`` never
raises: a policy that cannot be loaded or evaluated refuses everything
(rule ``xhv-policy-unavailable``) when ``[xhv_policy] fail_closed`` is on
(the default), and allows with a warning when it is off.
"""

import logging as std_logging

from oslo_log import log as logging

from nova_xhv.policy import engine

LOG = logging.getLogger(__name__)


class Enforcer(object):

    def __init__(self, policy_file, policy_dir, fail_closed=True,
                 point='driver', reporter=None,
                 memo_size=engine.MEMO_SIZE):
        self.point = point
        self.fail_closed = fail_closed
        self.policy = None
        self.error = None
        # reporter(context, point, document, decision): notifications,
        # instance action events (nova_xhv.policy.nova_report).
        self.reporter = reporter
        try:
            self.policy = engine.Policy.from_files(policy_file, policy_dir,
                                                   memo_size=memo_size)
        except engine.PolicyError as error:
            self.error = error
        except Exception as error:
            self.error = engine.PolicyError(['%s: %s' % (
                type(error).__name__, error)])
        self._log_start(policy_file, policy_dir)

    @classmethod
    def from_conf(cls, conf, point, reporter=None):
        """From ``conf`` = CONF.xhv_policy."""
        return cls(conf.policy_file, conf.policy_dir, conf.fail_closed,
                   point, reporter, conf.decision_cache_size)

    @property
    def digest(self):
        return self.policy.digest if self.policy else None

    def _log_start(self, policy_file, policy_dir):
        mode = ('fail closed: every decision is refused while it cannot be '
                'loaded' if self.fail_closed else
                'fail OPEN: decisions are allowed while it cannot be loaded')
        if self.policy is None:
            LOG.error('XHV policy (%s, %s/*.rego) cannot be loaded at the %s '
                      'enforcement point; %s: %s', policy_file, policy_dir,
                      self.point, mode, self.error)
            return
        counts = self.policy.counts()
        LOG.info('XHV policy %s loaded at the %s enforcement point from %s '
                 'and %s/*.rego: %d rules (%d deny, %d warn, %d dryrun), %d '
                 'operator modules; %s; %s', self.policy.short_digest,
                 self.point, policy_file, policy_dir,
                 len(self.policy.rules), counts['deny'], counts['warn'],
                 counts['dryrun'], len(self.policy.operator_modules), mode,
                 self._memo_text())

    def _memo_text(self):
        memo = self.policy.memo
        if memo.enabled:
            return ('decisions remembered (up to %d) by the input values the '
                    'policy reads' % memo.size)
        if memo.size:
            return ('decisions not remembered: a module calls a '
                    'non-deterministic built-in')
        return ('decisions not remembered ([xhv_policy] '
                'decision_cache_size = 0)')

    def _unavailable(self, why):
        violation = engine.Violation(
            rule=engine.UNAVAILABLE, enforcement='deny',
            msg='the XHV policy cannot be used (%s); [xhv_policy] '
                'fail_closed is on' % why)
        if self.fail_closed:
            return engine.Decision(deny=[violation], warn=[], dryrun=[],
                                   digest=self.digest)
        return engine.Decision(deny=[], warn=[engine.Violation(
            rule=engine.UNAVAILABLE, enforcement='warn',
            msg='the XHV policy cannot be used (%s); allowed because '
                '[xhv_policy] fail_closed is off' % why)], dryrun=[],
            digest=self.digest)

    def decide(self, document, context=None, report=True, log=True):
        if self.policy is None:
            decision = self._unavailable(self.error)
        else:
            try:
                decision = self.policy.decide(document)
            except engine.PolicyError as error:
                LOG.error('XHV policy evaluation failed at the %s point: '
                          '%s', self.point, error)
                decision = self._unavailable(error)
        if log:
            self.log(document, decision)
        if report and self.reporter is not None and decision.rule_ids:
            try:
                self.reporter(context, self.point, document, decision)
            except Exception:
                LOG.exception('Could not report an XHV policy decision')
        return decision

    def decide_each(self, request, destinations):
        """[Decision] of one request at each destination; never raises.

        Neither logged nor reported: the caller knows which of them is
        final (the scheduler logs refused classes, nova-api reports).
        """
        destinations = list(destinations)
        if self.policy is None:
            return [self._unavailable(self.error) for _ in destinations]
        try:
            return self.policy.decide_each(request, destinations)
        except engine.PolicyError as error:
            LOG.error('XHV policy evaluation failed at the %s point: '
                      '%s', self.point, error)
            return [self._unavailable(error) for _ in destinations]

    def log(self, document, decision):
        if not decision.rule_ids:
            return
        level = std_logging.WARNING if decision.deny or decision.warn \
            else std_logging.INFO
        server = (document.get('server') or {}).get('uuid')
        LOG.log(level, 'XHV policy %s at the %s point, %s of server %s '
                '(request %s): %s', 'DENIES' if decision.deny else 'allows',
                self.point, document.get('action'), server,
                document.get('request_id'),
                '; '.join('%s %s' % (v.enforcement, v.text()) for v in
                          decision.deny + decision.warn + decision.dryrun))
