"""Decisions remembered by the exact part of the input the policy reads.

A decision is a function of the compiled policy and of the input values
its modules read; nothing else (no clock, no randomness, no network: a
policy that calls such built-ins is never memoised).  So two documents
that agree on every value the modules can reach get the same decision,
and the second one need not run the engine.

What the modules can reach is found in their text, conservatively: every
occurrence of the word ``input`` must be a static path -- ``input.a.b``,
``input["a"]``, ``object.get(input, ["a", "b"], d)`` -- and the key keeps
the whole subtree under each such path.  Any other use (``input`` alone,
``input[x]`` at the top, ``some k, v in input``, ``import input as i``, the
word in a comment) means the whole document, which is still correct, only
less often a hit.  The key also records where a path stops (a missing key,
a null, a list) so "absent" and "null" never share an entry.

The memo belongs to one loaded Policy: a changed policy is a new Policy
with an empty memo (and the digest is in every key besides).
"""

import collections
import json
import re
import threading

# Built-ins whose answer is not a function of input and data.
_NONDETERMINISTIC = re.compile(
    r'\b(time\.now_ns|rand\.|uuid\.rfc4122|http\.send|opa\.runtime|'
    r'net\.lookup|io\.jwt\.decode_verify|time\.clock|time\.date|'
    r'crypto\.x509\.parse_and_verify)')
_INPUT = re.compile(r'\binput\b')
_STEP = re.compile(r'\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)'
                   r'|\[\s*"([A-Za-z0-9_-]+)"\s*\])')
_OBJECT_GET = re.compile(
    r'object\.get\(\s*input\s*,\s*\[((?:\s*"[A-Za-z0-9_-]+"\s*,)*'
    r'\s*"[A-Za-z0-9_-]+"\s*)\]\s*,')
_LITERAL = re.compile(r'"([A-Za-z0-9_-]+)"')
WHOLE = ()


def deterministic(modules):
    """False when a module calls a built-in that is not a pure function."""
    return not any(_NONDETERMINISTIC.search(text)
                   for text in modules.values())


def input_paths(modules):
    """The set of input paths (tuples) the modules read; {()} for all."""
    paths = set()
    for text in modules.values():
        getters = {m.start(0) + m.group(0).index('input'): tuple(
            _LITERAL.findall(m.group(1))) for m in _OBJECT_GET.finditer(text)}
        for found in _INPUT.finditer(text):
            start = found.start()
            if start in getters:
                paths.add(getters[start])
                continue
            path = []
            position = found.end()
            while True:
                step = _STEP.match(text, position)
                if step is None:
                    break
                path.append(step.group(1) or step.group(2))
                position = step.end()
            paths.add(tuple(path))
    return _minimal(paths)


def _minimal(paths):
    """Drop every path under another one (its subtree is kept already)."""
    kept = set()
    for path in sorted(paths, key=len):
        if not any(path[:len(prefix)] == prefix for prefix in kept):
            kept.add(path)
    return kept


def projection(document, paths):
    """What ``document`` holds at each path: the memo key's content."""
    if WHOLE in paths:
        return document
    found = []
    for path in sorted(paths):
        value = document
        for depth, key in enumerate(path):
            if not isinstance(value, dict):
                # A null, list or scalar where the path goes on: Rego's
                # lookup is undefined there; record what stood there.
                found.append([path, 'stops', depth, value])
                break
            if key not in value:
                found.append([path, 'absent', depth])
                break
            value = value[key]
        else:
            found.append([path, 'value', value])
    return found


class DecisionMemo(object):
    """A bounded LRU of decisions keyed by what the policy reads."""

    def __init__(self, modules, digest, size):
        self.digest = digest
        self.size = size
        self.paths = input_paths(modules)
        self.enabled = size > 0 and deterministic(modules)
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, kind, document):
        """A string naming (policy, query kind, what is read), or None."""
        if not self.enabled:
            return None
        try:
            return json.dumps([self.digest, kind,
                               projection(document, self.paths)],
                              sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):
            return None  # not plain JSON: decide without the memo

    def get(self, key):
        if key is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value):
        if key is None:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self):
        return len(self._entries)
