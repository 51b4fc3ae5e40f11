"""A small PowerShell: the language subset XHV's Hyper-V backend sends.

Parsed the way Windows PowerShell 5.1 parses it, so a value that escapes
its quotes becomes code here exactly as it would on a real host:

* statements separated by newlines or ``;``; ``$name = <pipeline>``;
* pipelines of commands (``|``), the first element may be a value;
* arguments are ``-Parameter`` (a switch, or followed by its value) with
  single-quoted strings (``''`` and the typographic single quotes
  U+2018..U+201B escape as in PowerShell), integers with optional
  KB/MB/GB suffix, ``$true``/``$false``/``$null``, variables, comma lists
  and ``@(...)`` lists of those; barewords as in argument mode;
* ``#`` comments.

Everything else a script could say (double-quoted strings and their
``$(...)`` expansion, subexpressions, script blocks, backtick escapes,
redirection, positional arguments, parameters a cmdlet does not have) is
refused with a ParseError or a CommandError: the simulator never pretends.
"""

import fnmatch
import json
import re

SINGLE_QUOTES = '\'\u2018\u2019\u201a\u201b'
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
DASHES = '-\u2013\u2014\u2015'
BAREWORD = re.compile(r'[A-Za-z0-9_.\\:]+(?:-[A-Za-z0-9_.\\:]+)*')
VARIABLE = re.compile(r'\$([A-Za-z_][A-Za-z0-9_]*)')
NUMBER = re.compile(r'(\d+)(KB|MB|GB|TB)?(?![A-Za-z0-9_])', re.IGNORECASE)
PARAMETER = re.compile(r'([A-Za-z][A-Za-z0-9_]*)')
MULTIPLIERS = {None: 1, 'kb': 1024, 'mb': 1024 ** 2, 'gb': 1024 ** 3,
               'tb': 1024 ** 4}


class ParseError(Exception):
    """The script is not PowerShell the simulator understands."""

    error_id = 'ParseError'
    category = 'ParserError'


class CommandError(Exception):
    """A cmdlet failed (a PowerShell ErrorRecord)."""

    def __init__(self, message, error_id='Unspecified',
                 category='InvalidOperation', cmdlet=None):
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.cmdlet = cmdlet
        # The -ErrorAction in force where it was raised (None: the
        # script's $ErrorActionPreference).
        self.action = None


class Token(object):
    def __init__(self, kind, value, pos):
        self.kind = kind
        self.value = value
        self.pos = pos

    def __repr__(self):
        return 'Token(%s, %r)' % (self.kind, self.value)


def tokenize(text):
    """PowerShell tokens of ``text`` (see module doc); ParseError if not."""
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in ' \t\f\v\u00a0':
            i += 1
        elif c in '\r\n':
            tokens.append(Token('sep', '\n', i))
            i += 2 if text.startswith('\r\n', i) else 1
        elif c == ';':
            tokens.append(Token('sep', ';', i))
            i += 1
        elif c == '#':
            while i < n and text[i] not in '\r\n':
                i += 1
        elif c == '|':
            if text.startswith('||', i):
                raise ParseError('pipeline chain operators (||) at %d' % i)
            tokens.append(Token('pipe', '|', i))
            i += 1
        elif c == ',':
            tokens.append(Token('comma', ',', i))
            i += 1
        elif c == '=':
            tokens.append(Token('assign', '=', i))
            i += 1
        elif c in SINGLE_QUOTES:
            value, i = _single_quoted(text, i)
            tokens.append(Token('string', value, i))
        elif c in DOUBLE_QUOTES:
            raise ParseError('double-quoted (expandable) string at %d: the '
                             'simulator does not expand strings' % i)
        elif c == '`':
            raise ParseError('backtick escape outside a string at %d' % i)
        elif c == '$':
            if text.startswith('$(', i) or text.startswith('${', i):
                raise ParseError('subexpression or braced variable at %d'
                                 % i)
            m = VARIABLE.match(text, i)
            if not m:
                raise ParseError('bad variable at %d' % i)
            tokens.append(Token('variable', m.group(1), i))
            i = m.end()
        elif c == '@':
            if text.startswith('@(', i):
                tokens.append(Token('array_open', '@(', i))
                i += 2
            else:
                raise ParseError('%r at %d (here-strings, hashtables and '
                                 'splatting are not modelled)'
                                 % (text[i:i + 2], i))
        elif c == ')':
            tokens.append(Token('close', ')', i))
            i += 1
        elif c in DASHES and i + 1 < n and text[i + 1].isalpha():
            m = PARAMETER.match(text, i + 1)
            name = m.group(1)
            i = m.end()
            if i < n and text[i] == ':':
                raise ParseError('-%s: parameter values are given after a '
                                 'space here' % name)
            tokens.append(Token('parameter', name, i))
        elif c.isdigit():
            m = NUMBER.match(text, i)
            if m:
                suffix = m.group(2).lower() if m.group(2) else None
                tokens.append(Token('number',
                                    int(m.group(1)) * MULTIPLIERS[suffix], i))
                i = m.end()
                continue
            m = BAREWORD.match(text, i)
            tokens.append(Token('word', m.group(0), i))
            i = m.end()
        else:
            m = BAREWORD.match(text, i)
            if not m:
                raise ParseError('unexpected %r at %d' % (c, i))
            tokens.append(Token('word', m.group(0), i))
            i = m.end()
    return tokens


def _single_quoted(text, start):
    i, n = start + 1, len(text)
    out = []
    while i < n:
        c = text[i]
        if c in SINGLE_QUOTES:
            if i + 1 < n and text[i + 1] in SINGLE_QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return ''.join(out), i + 1
        out.append(c)
        i += 1
    raise ParseError('unterminated string starting at %d' % start)


# -- parsing ----------------------------------------------------------------

class Command(object):
    def __init__(self, name, params):
        self.name = name
        self.params = params  # [(name, value-expression or None)]


class Value(object):
    """An expression: ('literal', v) | ('variable', name) | ('list', [..])."""

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value


class Statement(object):
    def __init__(self, target, elements):
        self.target = target  # variable name or None
        self.elements = elements  # [Value | Command]


class Parser(object):

    def __init__(self, tokens, switches):
        self.tokens = tokens
        self.i = 0
        self.switches = switches  # cmdlet (lower) -> set of switch names

    def peek(self, offset=0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def script(self):
        statements = []
        while self.peek() is not None:
            if self.peek().kind == 'sep':
                self.take()
                continue
            statements.append(self.statement())
        return statements

    def statement(self):
        target = None
        if (self.peek().kind == 'variable' and self.peek(1) is not None
                and self.peek(1).kind == 'assign'):
            target = self.take().value
            self.take()
        elements = [self.element(first=True)]
        while self.peek() is not None and self.peek().kind == 'pipe':
            self.take()
            elements.append(self.element(first=False))
        tok = self.peek()
        if tok is not None and tok.kind != 'sep':
            raise ParseError('unexpected %s %r at %d'
                             % (tok.kind, tok.value, tok.pos))
        return Statement(target, elements)

    def element(self, first):
        tok = self.peek()
        if tok is None:
            raise ParseError('empty pipeline element')
        if tok.kind == 'word':
            return self.command()
        if first:
            return self.value()
        raise ParseError('expressions are only allowed as the first '
                         'element of a pipeline (%r at %d)'
                         % (tok.value, tok.pos))

    def command(self):
        name = self.take().value
        switches = self.switches.get(name.lower(), set())
        params = []
        while self.peek() is not None and self.peek().kind not in (
                'sep', 'pipe', 'close'):
            tok = self.take()
            if tok.kind != 'parameter':
                raise ParseError(
                    '%s: positional argument %r at %d: the simulator takes '
                    'named parameters only' % (name, tok.value, tok.pos))
            if tok.value.lower() in switches:
                params.append((tok.value, None))
                continue
            nxt = self.peek()
            if nxt is None or nxt.kind in ('sep', 'pipe', 'parameter',
                                           'close'):
                raise ParseError('%s: missing a value for -%s'
                                 % (name, tok.value))
            params.append((tok.value, self.value(argument=True)))
        return Command(name, params)

    def value(self, argument=False):
        items = [self.single(argument)]
        while self.peek() is not None and self.peek().kind == 'comma':
            self.take()
            items.append(self.single(argument))
        return items[0] if len(items) == 1 else Value('list', items)

    def single(self, argument):
        tok = self.take()
        if tok.kind in ('string', 'number'):
            return Value('literal', tok.value)
        if tok.kind == 'word' and argument:
            return Value('literal', tok.value)
        if tok.kind == 'variable':
            return Value('variable', tok.value)
        if tok.kind == 'array_open':
            items = []
            while self.peek() is not None and self.peek().kind != 'close':
                if self.peek().kind == 'comma':
                    self.take()
                    continue
                items.append(self.single(argument=True))
            if self.peek() is None:
                raise ParseError('unterminated @(')
            self.take()
            return Value('list', items)
        raise ParseError('unexpected %s %r at %d'
                         % (tok.kind, tok.value, tok.pos))


# -- running ----------------------------------------------------------------

AUTOMATIC = {'true': True, 'false': False, 'null': None}


class Cmdlet(object):
    """One cmdlet: its parameters ({name: kind}) and its Python body.

    ``kind`` is 'switch', 'string', 'int', 'bool', 'strings' or 'any'.
    ``body(params, input_objects)`` returns a list of output objects.
    """

    def __init__(self, name, params, body, takes_input=False):
        self.name = name
        self.params = {k.lower(): (k, kind) for k, kind in params.items()}
        self.body = body
        self.takes_input = takes_input

    @property
    def switches(self):
        return {k for k, (_, kind) in self.params.items() if kind == 'switch'}


COMMON = {'erroraction': ('ErrorAction', 'string')}
ERROR_ACTIONS = ('stop', 'continue', 'silentlycontinue', 'ignore')


class Runspace(object):
    """Runs scripts against ``cmdlets`` (name -> Cmdlet)."""

    def __init__(self, cmdlets):
        self.cmdlets = {name.lower(): c for name, c in cmdlets.items()}

    def run(self, script):
        """(stdout text, [CommandError], exit code) of one script."""
        variables = {'ErrorActionPreference'.lower(): 'Continue'}
        out, errors = [], []
        try:
            switches = {name: c.switches for name, c in self.cmdlets.items()}
            statements = Parser(tokenize(script), switches).script()
        except ParseError as exc:
            return '', [CommandError(str(exc), exc.error_id, exc.category)], 1
        for statement in statements:
            try:
                result = self._pipeline(statement.elements, variables)
            except CommandError as exc:
                action = exc.action or str(
                    variables['erroractionpreference']).lower()
                if action in ('silentlycontinue', 'ignore'):
                    continue
                errors.append(exc)
                if action == 'stop':
                    break
                continue
            if statement.target is not None:
                variables[statement.target.lower()] = (
                    result[0] if len(result) == 1 else result)
                continue
            for obj in result:
                if not isinstance(obj, str):
                    errors.append(CommandError(
                        'the simulator does not format %s objects for '
                        'display: pipe them into ConvertTo-Json or Out-Null'
                        % type(obj).__name__, 'NotModelled'))
                    return '\n'.join(out), errors, 1
                out.append(obj)
        text = ''.join(line + '\r\n' for line in out)
        return text, errors, 1 if errors else 0

    def _evaluate(self, value, variables):
        if value.kind == 'literal':
            return value.value
        if value.kind == 'list':
            return [self._evaluate(v, variables) for v in value.value]
        name = value.value.lower()
        if name in AUTOMATIC:
            return AUTOMATIC[name]
        if name not in variables:
            raise CommandError('The variable $%s is not set (strict mode)'
                               % value.value, 'VariableIsUndefined')
        return variables[name]

    def _pipeline(self, elements, variables):
        objects = None
        preference = str(variables['erroractionpreference']).lower()
        for element in elements:
            if isinstance(element, Value):
                got = self._evaluate(element, variables)
                objects = got if isinstance(got, list) else [got]
                continue
            objects = self._command(element, objects, variables, preference)
        return objects or []

    def _command(self, command, objects, variables, preference):
        cmdlet = self.cmdlets.get(command.name.lower())
        action = preference
        if cmdlet is None:
            exc = CommandError(
                "The term '%s' is not recognized as the name of a cmdlet, "
                "function, script file, or operable program (the simulator "
                "does not model it)." % command.name,
                'CommandNotFoundException', 'ObjectNotFound', command.name)
            exc.action = action
            raise exc
        params = {}
        try:
            for name, expr in command.params:
                key = name.lower()
                if key in COMMON:
                    action = str(self._evaluate(expr, variables)).lower()
                    if action not in ERROR_ACTIONS:
                        raise CommandError('-ErrorAction %s is not modelled'
                                           % action, 'NotModelled')
                    continue
                if key not in cmdlet.params:
                    raise CommandError(
                        "A parameter cannot be found that matches parameter "
                        "name '%s'." % name,
                        'NamedParameterNotFound', 'InvalidArgument')
                canonical, kind = cmdlet.params[key]
                if canonical in params:
                    raise CommandError("Cannot bind parameter '%s' twice"
                                       % canonical, 'ParameterAlreadyBound',
                                       'InvalidArgument')
                params[canonical] = _coerce(
                    canonical, kind, True if expr is None
                    else self._evaluate(expr, variables))
            if objects is not None and not cmdlet.takes_input:
                raise CommandError('%s does not take pipeline input in the '
                                   'simulator' % cmdlet.name, 'NotModelled')
            return cmdlet.body(params, objects)
        except CommandError as exc:
            exc.cmdlet = exc.cmdlet or cmdlet.name
            exc.action = action
            raise


def _coerce(name, kind, value):
    def fail():
        raise CommandError("Cannot convert value %r of parameter '%s' to %s"
                           % (value, name, kind),
                           'ParameterArgumentTransformationError',
                           'InvalidArgument')
    if kind == 'switch':
        if value is not True:
            fail()
        return True
    if kind == 'any':
        return value
    if kind == 'string':
        if isinstance(value, (list, dict, bool)) or value is None:
            fail()
        return str(value)
    if kind == 'int':
        if isinstance(value, bool):
            fail()
        try:
            return int(value)
        except (TypeError, ValueError):
            fail()
    if kind == 'bool':
        if not isinstance(value, bool):
            fail()
        return value
    if kind == 'strings':
        items = value if isinstance(value, list) else [value]
        if any(not isinstance(v, (str, int)) or isinstance(v, bool)
               for v in items):
            fail()
        return [str(v) for v in items]
    raise AssertionError(kind)


# -- the language's own cmdlets ---------------------------------------------

class Record(dict):
    """An object with properties (what a cmdlet emits)."""

    #: Properties ConvertTo-Json may serialise without Select-Object.
    flat = False


def convert_to_json(params, objects):
    if 'InputObject' in params:
        objects = [params['InputObject']]
    objects = objects or []
    if not objects:
        return []
    for obj in objects:
        if isinstance(obj, Record) and not obj.flat:
            raise CommandError(
                'the simulator serialises only selected properties: pipe '
                'through Select-Object -Property first', 'NotModelled')
    value = objects[0] if len(objects) == 1 else list(objects)
    if 'Compress' in params:
        return [json.dumps(value, separators=(',', ':'))]
    return [json.dumps(value, indent=4)]


def select_object(params, objects):
    wanted = params.get('Property')
    if not wanted:
        raise CommandError('Select-Object without -Property is not '
                           'modelled', 'NotModelled')
    selected = []
    for obj in objects or []:
        if not isinstance(obj, dict):
            raise CommandError('Select-Object of a %s is not modelled'
                               % type(obj).__name__, 'NotModelled')
        lowered = {k.lower(): k for k in obj}
        record = Record()
        record.flat = True
        for name in wanted:
            if '*' in name or '?' in name:
                raise CommandError('wildcard properties are not modelled',
                                   'NotModelled')
            key = lowered.get(name.lower())
            record[key or name] = obj[key] if key else None
        selected.append(record)
    return selected


def out_null(params, objects):
    return []


def language_cmdlets():
    return {
        'ConvertTo-Json': Cmdlet('ConvertTo-Json', {
            'Compress': 'switch', 'Depth': 'int', 'InputObject': 'any'},
            convert_to_json, takes_input=True),
        'Select-Object': Cmdlet('Select-Object', {'Property': 'strings'},
                                select_object, takes_input=True),
        'Out-Null': Cmdlet('Out-Null', {}, out_null, takes_input=True),
    }


def wildcard_match(pattern, name):
    """PowerShell -Name wildcard matching (case-insensitive)."""
    if not any(c in pattern for c in '*?['):
        return pattern.lower() == name.lower()
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def clixml_error(errors):
    """The CLIXML stderr ``powershell -EncodedCommand`` writes for errors."""
    from xml.sax import saxutils
    parts = []
    for exc in errors:
        where = ('%s : ' % exc.cmdlet) if exc.cmdlet else ''
        text = '%s%s\n    + CategoryInfo          : %s\n    + ' \
               'FullyQualifiedErrorId : %s\n' % (
                   where, exc.message, exc.category,
                   '%s,%s' % (exc.error_id, exc.cmdlet or 'script'))
        escaped = saxutils.escape(text).replace('\n', '_x000D__x000A_')
        parts.append('<S S="Error">%s</S>' % escaped)
    return ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.'
            'microsoft.com/powershell/2004/04">%s</Objs>' % ''.join(parts))
