"""The one way values enter a PowerShell script.

Every value put into a script that XHV sends to a Hyper-V host goes
through ``literal`` (strings become single-quoted literals, in which
PowerShell expands nothing: no ``$``, no ``$()``, no backtick); cmdlet
and parameter names are XHV's own constants and checked.  A script is a
list of ``command(...)`` lines, never text concatenated with data.
"""

import re

# PowerShell closes a single-quoted string at any of these (its
# CodeGeneration.EscapeSingleQuotedStringContent doubles all four).
SINGLE_QUOTES = '\'\u2018\u2019\u201a\u201b'
NAME = re.compile(r'^[A-Za-z][A-Za-z0-9]*(-[A-Za-z][A-Za-z0-9]*)?$')
PREAMBLE = ("$ErrorActionPreference = 'Stop'", "$ProgressPreference = "
            "'SilentlyContinue'")


class Switch(object):
    """A switch parameter that is present (``-Force``)."""


SWITCH = Switch()


def quote(text):
    """``text`` as a PowerShell single-quoted string literal."""
    if not isinstance(text, str):
        raise TypeError('quote() takes a str, not %s' % type(text).__name__)
    if '\0' in text:
        raise ValueError('a PowerShell string cannot carry NUL')
    out = []
    for c in text:
        out.append(c + c if c in SINGLE_QUOTES else c)
    return "'%s'" % ''.join(out)


def literal(value):
    """Any value XHV passes to a cmdlet, as PowerShell source."""
    if isinstance(value, bool):
        return '$true' if value else '$false'
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError('an empty list has no PowerShell literal here')
        return ','.join(literal(v) for v in value)
    raise TypeError('no PowerShell literal for %s' % type(value).__name__)


def _name(name):
    if not NAME.match(name):
        raise ValueError('not a cmdlet or parameter name: %r' % name)
    return name


def command(cmdlet, *pipeline, **params):
    """``Cmdlet -Param <literal> ... | <pipeline>`` (params in order).

    ``pipeline`` are further commands (strings made by this function).
    """
    parts = [_name(cmdlet)]
    for key, value in params.items():
        if value is None:
            continue
        if value is SWITCH:
            parts.append('-' + _name(key))
        else:
            parts.append('-%s %s' % (_name(key), literal(value)))
    return ' | '.join([' '.join(parts)] + list(pipeline))


def select_json(*properties):
    """The tail that prints objects: Select-Object | ConvertTo-Json."""
    return ' | '.join([command('Select-Object', Property=list(properties)),
                       command('ConvertTo-Json', Compress=SWITCH,
                               Depth=3)])


def script(*lines):
    """A whole script: stop at the first error, then ``lines``."""
    return '\n'.join(PREAMBLE + lines)
