"""Keep test groups that cannot share a Python process apart.

* Nova's functional harness (tests/functional/nova_base.py) monkey-patches
  eventlet as soon as it is imported; socket- and thread-based tests that
  run after it in the same process can deadlock (a server thread blocking
  the whole hub) instead of failing.
* Nova and Cinder both register options on oslo.config's global CONF.

So a pytest session may hold tests of one group only; tools/run-tests runs
one process per group.  Mixing them is refused at collection, with the
command to use, rather than left to hang.
"""

import os
import sys

if os.environ.get('OS_NOVA_DISABLE_EVENTLET_PATCHING', '').lower() in (
        '1', 'true', 'yes'):
    # Nova's threading mode (nova-compute's default in Nova 34) must be
    # chosen before anything imports eventlet (futurist does, if it can).
    from nova import monkey_patch
    monkey_patch.patch()

import pytest  # noqa: E402

HARNESS_MODULE = 'tests.functional.nova_base'
CINDER_DIRS = ('tests/unit/cinder', 'tests/functional/cinder')


def _group(item):
    cls = getattr(item, 'cls', None)
    if cls is not None and any(base.__module__ == HARNESS_MODULE
                               for base in cls.__mro__):
        return 'nova-harness'
    path = item.path.as_posix()
    if any('/%s/' % d in path for d in CINDER_DIRS):
        return 'cinder'
    return 'plain'


def pytest_collection_modifyitems(session, config, items):
    groups = {}
    for item in items:
        groups.setdefault(_group(item), item.nodeid)
    if len(groups) > 1:
        examples = '; '.join('%s (e.g. %s)' % pair
                             for pair in sorted(groups.items()))
        raise pytest.UsageError(
            'these tests cannot share one pytest process: %s. Run '
            'tools/run-tests, which runs each group in its own process, '
            'or select one group.' % examples)
    if set(groups) == {'plain'} and HARNESS_MODULE in sys.modules:
        # Importing the harness patches eventlet for the whole process:
        # socket, TLS and thread tests then hang or recurse (eventlet#371).
        raise pytest.UsageError(
            'a plain test module imported %s (it monkey-patches eventlet '
            'for the whole process); import tests.fixtures.wait and the '
            'fixtures instead' % HARNESS_MODULE)
