"""Refuse Rego modules that are not Rego v1.

rego-cpp speaks v1 only and reads some v0 syntax silently as something
else: ``deny[msg] { ... }`` (a v0 partial set) becomes an OBJECT keyed by
``msg``, ``allow { ... }`` a rule without ``if``.  A policy that means one
thing to its author and another to the engine is worse than none, so
every module is checked here, lexically, before it is compiled.

The check: outside comments and strings, every rule body at the top
level of a module opens after ``if`` (v1 requires ``if`` before every
body); a ``{`` that opens right after a term (an identifier, ``]``,
``)``, a number, a string, ``else``) is a v0 body.  A ``{`` after an
operator (``:=``, ``=``, ``contains``, ``|``, ...) starts a literal.  A
module must also name its ``package`` first.
"""

import re

_TOKEN = re.compile(r'''
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|==|!=|<=|>=|[{}\[\]().,;:=|&+\-*/%<>])
''', re.VERBOSE)

# A "{" right after one of these opens a rule body (v0 when not "if").
_TERM_END = ('name', 'number', 'string', 'raw')
_CLOSERS = (']', ')', '}')
# Names after which "{" is a literal, not a body.
_LITERAL_AFTER = frozenset(('if', 'contains', 'in', 'not', 'some', 'every',
                            'with', 'as', 'default'))


class NotRegoV1(ValueError):
    """A module that is not Rego v1 (or that cannot be tokenised)."""


def tokens(source):
    """(kind, text, line) of ``source`` without spaces and comments."""
    position = 0
    line = 1
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise NotRegoV1('line %d: unexpected character %r'
                            % (line, source[position]))
        kind = match.lastgroup
        text = match.group()
        if kind not in ('space', 'comment'):
            yield kind, text, line
        line += text.count('\n')
        position = match.end()


def check(name, source, allow_with=False):
    """Raise NotRegoV1 naming the line when ``source`` is not v1.

    Returns the module's package (dotted).  ``with`` is refused unless
    ``allow_with``: rego-cpp 1.5 crashes the process on some ``with``
    expressions (seen: ``with input as`` next to a rule reading data), and
    enforcement runs inside Nova's services.
    """
    found = list(tokens(source))
    if len(found) < 2 or found[0][1] != 'package':
        raise NotRegoV1('%s: a Rego module starts with "package"' % name)
    package = []
    for kind, text, line in found[1:]:
        if line != found[0][2]:
            break
        if kind == 'name' or text == '.':
            package.append(text)
            continue
        break
    depth = 0
    previous = None
    for kind, text, line in found:
        if text == 'with' and kind == 'name' and not allow_with:
            raise NotRegoV1(
                '%s line %d: "with" is accepted in *_test.rego files only '
                '(the engine can crash on it inside a service)'
                % (name, line))
        if text in ('{', '[', '('):
            if text == '{' and depth == 0 and previous is not None:
                pkind, ptext = previous
                if ptext == 'else' or (
                        (pkind in _TERM_END or ptext in _CLOSERS)
                        and ptext not in _LITERAL_AFTER):
                    raise NotRegoV1(
                        '%s line %d: a rule body without "if" (Rego v0 '
                        'syntax, which this engine would misread); write '
                        '"name if { ... }" or "name contains x if { ... }"'
                        % (name, line))
            depth += 1
        elif text in ('}', ']', ')'):
            depth -= 1
            if depth < 0:
                raise NotRegoV1('%s line %d: unbalanced %r' % (name, line,
                                                               text))
        previous = (kind, text)
    if depth:
        raise NotRegoV1('%s: unbalanced brackets at the end' % name)
    return ''.join(package)
