"""Load the XHV policy and decide with it, in-process (regopy).

The policy is one file set, the same on every node (nova-api, the
scheduler, every compute):

``policy.yaml``
    ``rules``: instances of the templates XHV ships (nova_xhv.policy
    .templates), each ``{id, template, enforcement: deny|warn|dryrun,
    match: {...}, parameters: {...}}``; ``defaults: false`` drops the
    default rules that carry the ``[xhv]`` options.
``policy.d/*.rego``
    The operator's own Rego v1 modules, adding to ``data.xhv.deny`` /
    ``data.xhv.warn``; ``*_test.rego`` files hold ``test_*`` rules that
    only ``xhv-policy test`` runs.

Everything is compiled once into one bundle; a decision is one query of
it (``x := {"deny": data.xhv.deny, ...}``).  One request decided for many
destinations (``decide_each``: the scheduler's host classes) first asks
once which rule instances its match blocks select, then runs only those
per destination.  Decisions are remembered by exactly the input values
the modules read (nova_xhv.policy.memo).  The digest names what was
loaded (rules and module texts), so computes can tell whether they run
the same policy.
"""

import dataclasses
import glob
import hashlib
import json
import os
import re
import threading
import typing

import yaml

from nova_xhv.policy import memo as decision_memo
from nova_xhv.policy import regov1
from nova_xhv.policy import templates

QUERY = ('x := {"deny": data.xhv.deny, "warn": data.xhv.warn, '
         '"dryrun": data.xhv.dryrun}')
# Which rule instances select a request (their match blocks), asked once
# when one request is decided for several destinations (decide_each).
APPLICABLE_QUERY = 'x := data.xhv.lib.applicable_rules'
# The input key that hands those back ({template: [rule id]}); only the
# engine writes it.
APPLICABLE_KEY = 'xhv_applicable_rules'
MEMO_SIZE = 1024
UNAVAILABLE = 'xhv-policy-unavailable'
OPERATOR_RULE = 'operator-rule'
_RULE_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$')
_RESERVED_PACKAGES = re.compile(r'^xhv\.(lib|templates)(\.|$)')
_TEST_RULE = re.compile(r'^(test_[A-Za-z0-9_]*)\b', re.MULTILINE)
TOP_KEYS = ('defaults', 'rules')


class PolicyError(Exception):
    """The policy files cannot be loaded; ``errors`` lists every reason."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str
    enforcement: str
    msg: str

    def text(self):
        return '%s: %s' % (self.rule, self.msg)


@dataclasses.dataclass
class Decision:
    """What the policy says about one input document."""

    deny: typing.List[Violation]
    warn: typing.List[Violation]
    dryrun: typing.List[Violation]
    digest: str

    @property
    def allowed(self):
        return not self.deny

    @property
    def rule_ids(self):
        return sorted({v.rule for v in self.deny + self.warn + self.dryrun})

    def reason(self):
        """One line naming every denying rule (for faults and 403s)."""
        return 'refused by XHV policy rule %s' % '; '.join(
            v.text() for v in self.deny)

    def to_dict(self):
        return {'allowed': self.allowed, 'digest': self.digest,
                **{kind: [dataclasses.asdict(v) for v in getattr(self, kind)]
                   for kind in ('deny', 'warn', 'dryrun')}}


def _digest(rules, modules):
    text = json.dumps({'rules': rules, 'modules': {
        name: hashlib.sha256(src.encode('utf-8')).hexdigest()
        for name, src in modules.items()}}, sort_keys=True)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def read_files(policy_file, policy_dir):
    """(document, {module name: source}, {test module name: source})."""
    document = {}
    if policy_file and os.path.exists(policy_file):
        try:
            with open(policy_file, encoding='utf-8') as f:
                document = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyError(['%s: %s' % (policy_file, error)])
        if document is None:
            document = {}
    modules, tests = {}, {}
    if policy_dir and os.path.isdir(policy_dir):
        for path in sorted(glob.glob(os.path.join(policy_dir, '*.rego'))):
            try:
                with open(path, encoding='utf-8') as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as error:
                raise PolicyError(['%s: %s' % (path, error)])
            name = os.path.basename(path)
            (tests if name.endswith('_test.rego') else modules)[name] = text
    return document, modules, tests


def read_case_files(policy_dir):
    """{name: [case]} of ``*_test.yaml`` tables in ``policy_dir``.

    A case: ``{name, input, deny: [rule ids], warn: [...], dryrun:
    [...]}``; a kind left out is not checked.  Tables need no ``with``
    (which rego-cpp 1.5 can crash on), so they are the dependable way to
    test a policy.
    """
    found = {}
    if not policy_dir or not os.path.isdir(policy_dir):
        return found
    for path in sorted(glob.glob(os.path.join(policy_dir, '*_test.yaml'))):
        try:
            with open(path, encoding='utf-8') as f:
                table = yaml.safe_load(f) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyError(['%s: %s' % (path, error)])
        cases = table.get('cases') if isinstance(table, dict) else None
        if not isinstance(cases, list) or not all(
                isinstance(c, dict) and isinstance(c.get('input'), dict)
                for c in cases):
            raise PolicyError(['%s: expected "cases": a list of {name, '
                               'input, deny, warn, dryrun}' % path])
        found[os.path.basename(path)] = cases
    return found


def normalize_rules(document):
    """The rule instances of a policy document; PolicyError if invalid."""
    errors = []
    if not isinstance(document, dict):
        raise PolicyError(['the policy file must be a mapping with "rules"'])
    for key in sorted(set(document) - set(TOP_KEYS)):
        errors.append('unknown top-level key %r (known: %s)'
                      % (key, ', '.join(TOP_KEYS)))
    defaults = document.get('defaults', True)
    if not isinstance(defaults, bool):
        errors.append('"defaults" must be true or false')
    raw = document.get('rules') or []
    if not isinstance(raw, list):
        errors.append('"rules" must be a list')
        raw = []
    rules = [dict(r, match=_plain_match({}), scope='any server')
             for r in templates.DEFAULT_RULES] if defaults is not False \
        else []
    seen = {r['id'] for r in rules}
    for index, rule in enumerate(raw):
        where = 'rule #%d' % (index + 1)
        if not isinstance(rule, dict):
            errors.append('%s must be a mapping' % where)
            continue
        unknown = set(rule) - {'id', 'template', 'enforcement', 'match',
                               'parameters', 'description'}
        if unknown:
            errors.append('%s: unknown keys %s' % (where,
                                                   ', '.join(sorted(unknown))))
        rule_id = rule.get('id')
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            errors.append('%s: "id" must be letters, digits, ".", "_", ":" '
                          'or "-"' % where)
            continue
        where = 'rule %s' % rule_id
        if rule_id in seen:
            errors.append('%s: the id is used twice' % where)
        seen.add(rule_id)
        template = rule.get('template')
        if template not in templates.SCHEMAS:
            errors.append('%s: unknown template %r (shipped: %s)' % (
                where, template, ', '.join(sorted(templates.SCHEMAS))))
            continue
        enforcement = rule.get('enforcement', 'deny')
        if enforcement not in templates.ENFORCEMENTS:
            errors.append('%s: enforcement must be one of %s' % (
                where, ', '.join(templates.ENFORCEMENTS)))
        match = rule.get('match') or {}
        errors.extend(_check_match(where, match))
        if template == 'scoped_moves' and not (set(match) - {'actions'}):
            errors.append('%s: a scoped_moves rule needs a match block '
                          '(tags, metadata, image_properties, '
                          'flavor_extra_specs or projects)' % where)
        parameters = rule.get('parameters') or {}
        errors.extend(templates.check_parameters(rule_id, template,
                                                 parameters))
        match = _plain_match(match)
        rules.append({'id': rule_id, 'template': template,
                      'enforcement': enforcement, 'match': match,
                      'scope': _scope_text(match),
                      'parameters': parameters})
    if errors:
        raise PolicyError(errors)
    return rules


def plain_value(value):
    """A property value as the policy compares it: a string."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _plain_match(match):
    """Every match key present (empty: any), mapping values as strings."""
    plain = {key: ({} if kind == 'mapping' else [])
             for key, kind in templates.MATCH_KEYS.items()}
    for key, value in (match if isinstance(match, dict) else {}).items():
        plain[key] = ({k: plain_value(v) for k, v in value.items()}
                      if isinstance(value, dict) else value)
    return plain


def _scope_text(match):
    parts = []
    for key, value in sorted(match.items()):
        if key == 'actions' or not value:
            continue
        if isinstance(value, dict):
            value = ', '.join('%s=%s' % kv for kv in sorted(value.items()))
        elif isinstance(value, list):
            value = ', '.join(str(v) for v in value)
        parts.append('%s %s' % (key, value))
    return '; '.join(parts) or 'any server'


def _check_match(where, match):
    if not isinstance(match, dict):
        return ['%s: "match" must be a mapping' % where]
    errors = []
    for key, value in sorted(match.items()):
        kind = templates.MATCH_KEYS.get(key)
        if kind is None:
            errors.append('%s: unknown match key %r (known: %s)' % (
                where, key, ', '.join(sorted(templates.MATCH_KEYS))))
            continue
        errors.extend('%s: match %s: %s' % (where, key, e)
                      for e in templates.check_value(kind, value))
    for action in match.get('actions') or []:
        if isinstance(action, str) and action not in templates.ACTIONS:
            errors.append('%s: unknown action %r (known: %s)' % (
                where, action, ', '.join(templates.ACTIONS)))
    return errors


def check_modules(modules):
    """{name: package} of operator modules; PolicyError if any is bad."""
    errors = []
    packages = {}
    for name, text in sorted(modules.items()):
        try:
            package = regov1.check(name, text,
                                   allow_with=name.endswith('_test.rego'))
        except regov1.NotRegoV1 as error:
            errors.append(str(error))
            continue
        if _RESERVED_PACKAGES.match(package):
            errors.append('%s: package %s is XHV\'s own; add to '
                          'data.xhv.deny / data.xhv.warn from package xhv '
                          '(or your own package)' % (name, package))
        packages[name] = package
    if errors:
        raise PolicyError(errors)
    return packages


def shipped_modules(rules):
    """{name: source} of the library, the templates and the collector."""
    modules = {'xhv/%s.rego' % name: templates.source(name)
               for name in templates.LIBRARY + tuple(sorted(
                   templates.SCHEMAS))}
    # The collector names each template: no reference to a package that
    # a variable selects, which keeps every path static for the compiler.
    collector = ['package xhv', '', 'import rego.v1', '']
    for name in sorted(templates.SCHEMAS):
        collector.append('violations contains v if {\n\tsome v in '
                         'data.xhv.templates.%s.violation\n}\n' % name)
    modules['xhv/violations.rego'] = '\n'.join(collector)
    return modules


# What the templates read of a rule instance (its match block is in the
# index below): every lookup of a rule copies it, so it stays small.
_RULE_FIELDS = ('id', 'template', 'enforcement', 'parameters', 'scope')


def rules_data(rules):
    slim = [{key: rule[key] for key in _RULE_FIELDS} for rule in rules]
    by_template = {name: [] for name in templates.SCHEMAS}
    for rule in slim:
        by_template[rule['template']].append(rule)
    # {match key: {rule id: wanted}} of the non-empty keys: lib.rego's
    # applicable_rules visits only the rules that use a key.
    index = {key: {} for key in templates.MATCH_KEYS}
    for rule in rules:
        for key, wanted in rule['match'].items():
            if wanted:
                index[key][rule['id']] = wanted
    return {'xhv': {'rules': by_template,
                    'rule': {rule['id']: rule for rule in slim},
                    'rule_ids': [rule['id'] for rule in rules],
                    'match_index': index}}


def _to_violation(entry, enforcement):
    if isinstance(entry, dict):
        return Violation(rule=str(entry.get('rule') or entry.get('id')
                                  or OPERATOR_RULE),
                         enforcement=enforcement,
                         msg=str(entry.get('msg') or entry.get('message')
                                 or entry))
    return Violation(rule=OPERATOR_RULE, enforcement=enforcement,
                     msg=str(entry))


class Policy(object):
    """A loaded, compiled policy: ``decide(input document)``."""

    def __init__(self, rules, operator_modules, test_modules=None,
                 source='', memo_size=MEMO_SIZE):
        import regopy  # noqa: a C extension; only where a policy loads

        self.rules = rules
        self.operator_modules = dict(operator_modules)
        self.test_modules = dict(test_modules or {})
        self.source = source
        self.case_files = {}
        self.packages = check_modules(dict(self.operator_modules,
                                           **self.test_modules))
        self.modules = shipped_modules(rules)
        self.modules.update(self.operator_modules)
        self.digest = _digest(rules, self.modules)
        self._lock = threading.Lock()
        self._interpreter = regopy.Interpreter()
        try:
            for name, text in self.modules.items():
                self._interpreter.add_module(name, text)
            self._interpreter.add_data_json(_json(rules_data(rules)))
            self._bundle = self._interpreter.build(QUERY)
            self._applicable_bundle = self._interpreter.build(
                APPLICABLE_QUERY)
        except regopy.RegoError as error:
            raise PolicyError(['the policy does not compile: %s'
                               % _first_lines(error)])
        self._set_input = self._choose_input_path(regopy)
        self.memo = decision_memo.DecisionMemo(self.modules, self.digest,
                                               memo_size)

    def _choose_input_path(self, regopy):
        """How to hand the engine an input document, checked here.

        regopy 1.5.2's ``Input`` (0.15 ms for a typical document) stores
        strings without escaping them, so a quote or backslash breaks
        them; strings escaped beforehand come out right.  Parsing the
        document as a Rego term is always right, and 2.5 times slower.
        A probe decides at load time, so a regopy that fixes ``Input``
        cannot make us escape twice.
        """
        probe = {'s': 'q"\\\n\u00e9', 'k"\\': ['\t']}
        interpreter = regopy.Interpreter()
        try:
            interpreter.set_input(regopy.Input(_escaped(probe)))
            output = json.loads(str(interpreter.query('x := input')))
            if output['bindings']['x'] == probe:
                return lambda document: self._interpreter.set_input(
                    regopy.Input(_escaped(document)))
        except (regopy.RegoError, ValueError, KeyError, TypeError):
            pass
        return lambda document: self._interpreter.set_input_term(
            _json(document))

    @classmethod
    def from_files(cls, policy_file, policy_dir, memo_size=MEMO_SIZE):
        document, modules, tests = read_files(policy_file, policy_dir)
        errors = []
        rules = []
        try:
            rules = normalize_rules(document)
        except PolicyError as error:
            errors.extend(error.errors)
        try:
            check_modules(dict(modules, **tests))
        except PolicyError as error:
            errors.extend(error.errors)
        if errors:
            raise PolicyError(errors)
        return cls(rules, modules, tests,
                   source='%s + %s/*.rego' % (policy_file, policy_dir),
                   memo_size=memo_size)

    @property
    def short_digest(self):
        return self.digest[:16]

    def counts(self):
        found = {e: 0 for e in templates.ENFORCEMENTS}
        for rule in self.rules:
            found[rule['enforcement']] += 1
        return found

    def decide(self, document):
        """The Decision for one input document (a JSON-able dict)."""
        document = _without_applicable(document)
        return self._decide(document)

    def decide_each(self, request, destinations):
        """[Decision] of ``request`` (a document) at each destination.

        The rules' match blocks read only the request (action, server,
        caller), so which rules apply is asked once and handed to every
        destination's query: a destination then costs only the checks of
        the rules that apply.  Same decisions as ``decide`` of each
        ``dict(request, destination=d)``.
        """
        request = _without_applicable(request)
        if len(destinations) < 2:
            return [self._decide(dict(request, destination=d))
                    for d in destinations]
        applicable = self._applicable(dict(request, destination=None))
        return [self._decide(dict(request, destination=d,
                                  **{APPLICABLE_KEY: applicable}))
                for d in destinations]

    def _applicable(self, document):
        """{template: [ids of its rules that select the request]}."""
        key = self.memo.key('applicable', document)
        found = self.memo.get(key)
        if found is None:
            result = self._query(self._applicable_bundle, document)
            ids = set(_as_list(result['bindings']['x']))
            found = {name: [] for name in templates.SCHEMAS}
            for rule in self.rules:
                if rule['id'] in ids:
                    found[rule['template']].append(rule['id'])
            self.memo.put(key, found)
        return {name: list(ids) for name, ids in found.items()}

    def _decide(self, document):
        key = self.memo.key('decide', document)
        found = self.memo.get(key)
        if found is None:
            found = self._evaluate(document)
            self.memo.put(key, found)
        # Callers get their own lists (Violations are frozen).
        return Decision(digest=found.digest, deny=list(found.deny),
                        warn=list(found.warn), dryrun=list(found.dryrun))

    def _query(self, bundle, document):
        import regopy

        with self._lock:
            try:
                self._set_input(document)
                output = self._interpreter.query_bundle(bundle)
                result = json.loads(str(output))
            except regopy.RegoError as error:
                raise PolicyError(['evaluation failed: %s'
                                   % _first_lines(error)])
            except ValueError as error:
                # regopy parses the engine's JSON itself; an undefined
                # result or text the engine failed to escape lands here.
                raise PolicyError(['evaluation gave no usable result: %s'
                                   % error])
        if 'errors' in result or not result.get('bindings'):
            raise PolicyError(['evaluation failed: %s'
                               % str(output)[:500]])
        return result

    def _evaluate(self, document):
        found = self._query(self._bundle, document)['bindings']['x']
        kinds = {kind: sorted({_to_violation(e, kind)
                               for e in _as_list(found.get(kind))},
                              key=lambda v: (v.rule, v.msg))
                 for kind in templates.ENFORCEMENTS}
        return Decision(digest=self.digest, **kinds)

    # -- operator tests (xhv-policy test) -----------------------------------

    def test_rules(self):
        """[(module, data path of a test_* rule)] of the test modules."""
        found = []
        for name, text in sorted(dict(self.operator_modules,
                                      **self.test_modules).items()):
            package = self.packages[name]
            for rule in sorted(set(_TEST_RULE.findall(text))):
                found.append((name, 'data.%s.%s' % (package, rule)))
        return found

    def run_cases(self):
        """[(table, case name, passed, detail)] of the *_test.yaml tables."""
        results = []
        for table, cases in sorted(self.case_files.items()):
            for index, case in enumerate(cases):
                name = str(case.get('name') or '#%d' % (index + 1))
                try:
                    decision = self.decide(case['input'])
                except PolicyError as error:
                    results.append((table, name, False, str(error)))
                    continue
                wrong = []
                for kind in ('deny', 'warn', 'dryrun'):
                    if kind not in case:
                        continue
                    got = sorted({v.rule for v in getattr(decision, kind)})
                    want = sorted(set(case[kind] or []))
                    if got != want:
                        wrong.append('%s: want %s, got %s' % (kind, want,
                                                              got))
                results.append((table, name, not wrong, '; '.join(wrong)))
        return results

    def run_tests(self):
        """[(module, rule path, passed, detail)]."""
        import regopy

        interpreter = regopy.Interpreter()
        for name, text in dict(self.modules, **self.test_modules).items():
            interpreter.add_module(name, text)
        interpreter.add_data_json(_json(rules_data(self.rules)))
        results = []
        for module, path in self.test_rules():
            try:
                try:
                    output = json.loads(str(interpreter.query(
                        'x := ' + path)))
                except ValueError:
                    output = {}  # undefined: regopy cannot parse it
                value = (output.get('bindings') or {}).get('x')
                results.append((module, path, value is True,
                                'true' if value is True else
                                'undefined' if value is None else
                                json.dumps(value)[:200]))
            except regopy.RegoError as error:
                results.append((module, path, False, _first_lines(error)))
        return results


def _without_applicable(document):
    """``document`` without the key only the engine may write."""
    if isinstance(document, dict) and APPLICABLE_KEY in document:
        document = dict(document)
        del document[APPLICABLE_KEY]
    return document


_JSON_ESCAPE = re.compile(r'[\x00-\x1f\\"]')


def _escaped(value):
    """``value`` with every string escaped as inside a JSON string."""
    if isinstance(value, str):
        # What json.dumps escapes (json.encoder.ESCAPE); most strings
        # hold none of it and come back as they are.
        if _JSON_ESCAPE.search(value) is None:
            return value
        return json.dumps(value, ensure_ascii=False)[1:-1]
    if isinstance(value, dict):
        return {_escaped(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def _json(value):
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, dict):
        # An operator rule written as a v1 partial object ("deny[x] if"):
        # its keys are the messages.
        return list(value)
    return list(value)


_ERROR = re.compile(r'\(error \d+:([^|\s]*)[^\n]*\n'
                    r'\s*\(errormsg \d+:([^)\n]*)')


def _first_lines(error, lines=3):
    """The engine's messages (module and text), without its syntax tree."""
    text = str(error)
    found = ['%s: %s' % m if m[0] else m[1] for m in _ERROR.findall(text)]
    if found:
        return '; '.join(dict.fromkeys(found))
    return ' | '.join(text.strip().splitlines()[:lines])
