"""The rule templates XHV ships, and the parameters each takes.

Each template is a Rego module ``rego/<name>.rego`` in package
``xhv.templates.<name>`` defining ``violation`` (a set of ``{"rule",
"enforcement", "msg"}``) from its rule instances in
``data.xhv.rules.<name>``.  The schema below is what ``check`` validates
an instance's ``parameters`` against before any Rego runs: a misspelt
parameter is an error, not a rule that silently never fires.
"""

import os

REGO_DIR = os.path.join(os.path.dirname(__file__), 'rego')
LIBRARY = ('lib', 'core')

FAMILY_EDGE = 'edge'  # {from, to, roles}

# name -> {parameter: (type, required)}; type: 'strings', 'edges', 'bool'.
SCHEMAS = {
    'project_placement': {'families': ('strings', False),
                          'aggregates': ('strings', False),
                          'availability_zones': ('strings', False)},
    'move_matrix': {'allow': ('edges', True),
                    'cross_family_only': ('bool', False)},
    'scoped_moves': {'allow': ('edges', True)},
    'required_capabilities': {'capabilities': ('strings', True),
                              'families': ('strings', False)},
    'accepted_source_families': {},
    'pinned_image_boot': {},
}

# Keys of a rule's "match" block: which requests a rule applies to.
MATCH_KEYS = {'actions': 'strings', 'projects': 'strings',
              'tags': 'strings', 'metadata': 'mapping',
              'image_properties': 'mapping',
              'flavor_extra_specs': 'mapping'}
ACTIONS = ('boot', 'move', 'resize', 'evacuate', 'live_migrate', 'unshelve',
           'audit')
ENFORCEMENTS = ('deny', 'warn', 'dryrun')

# The rules [xhv] options always meant; loaded unless the policy says
# "defaults: false".
DEFAULT_RULES = (
    {'id': 'xhv-accepted-source-families',
     'template': 'accepted_source_families', 'enforcement': 'deny',
     'parameters': {}},
    {'id': 'xhv-new-boot-families', 'template': 'pinned_image_boot',
     'enforcement': 'deny', 'parameters': {}},
)


def source(name):
    with open(os.path.join(REGO_DIR, name + '.rego'), encoding='utf-8') as f:
        return f.read()


def check_parameters(rule_id, template, parameters):
    """Errors (strings) of one instance's parameters; [] when valid."""
    schema = SCHEMAS[template]
    errors = []
    if not isinstance(parameters, dict):
        return ['rule %s: parameters must be a mapping' % rule_id]
    for key in sorted(set(parameters) - set(schema)):
        errors.append('rule %s: template %s takes no parameter %r (it '
                      'takes: %s)' % (rule_id, template, key,
                                      ', '.join(sorted(schema)) or 'none'))
    for key, (kind, required) in sorted(schema.items()):
        if key not in parameters:
            if required:
                errors.append('rule %s: template %s needs parameter %r'
                              % (rule_id, template, key))
            continue
        errors.extend('rule %s: parameter %s: %s' % (rule_id, key, e)
                      for e in check_value(kind, parameters[key]))
    return errors


def check_value(kind, value):
    if kind == 'bool':
        return [] if isinstance(value, bool) else ['must be true or false']
    if kind == 'strings':
        if (not isinstance(value, list)
                or not all(isinstance(v, str) and v for v in value)):
            return ['must be a list of non-empty strings']
        return []
    if kind == 'mapping':
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float, bool))
                for k, v in value.items()):
            return ['must map names to plain values']
        return []
    if kind == 'edges':
        if not isinstance(value, list):
            return ['must be a list of {from, to, roles}']
        errors = []
        for index, edge in enumerate(value):
            if not isinstance(edge, dict) or set(edge) - {
                    'from', 'to', 'roles'}:
                errors.append('entry %d must be {from, to, roles}' % index)
                continue
            for end in ('from', 'to'):
                if not isinstance(edge.get(end, '*'), str):
                    errors.append('entry %d: %s must be a family or "*"'
                                  % (index, end))
            roles = edge.get('roles', [])
            if not isinstance(roles, list) or not all(
                    isinstance(r, str) for r in roles):
                errors.append('entry %d: roles must be a list of role '
                              'names' % index)
        return errors
    raise AssertionError(kind)
