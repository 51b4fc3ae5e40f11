"""The house rules of doc/source/architecture.rst, read from the source.

An AST scan of every import statement (also imports inside functions), so
that an arrow in the wrong direction fails here, not in review.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FORMAT_NAMES = {'raw', 'qcow2', 'vmdk', 'vhdx', 'vhd'}


def _python_files(package):
    top = os.path.join(ROOT, *package.split('.'))
    for folder, _dirs, files in os.walk(top):
        for name in sorted(files):
            if name.endswith('.py'):
                yield os.path.join(folder, name)


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == '__init__':
        rel = rel[:-1]
    return '.'.join(rel)


def _imports(path):
    """Absolute names of every module ``path`` imports (and from-imports)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    module = _module_name(path)
    is_package = path.endswith('__init__.py')
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.')
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - node.level + 1]
                prefix = '.'.join(base + ([node.module] if node.module
                                          else []))
            else:
                prefix = node.module
            # ``from nova_xhv import migration`` names the module it takes.
            names.update('%s.%s' % (prefix, alias.name)
                         for alias in node.names)
    return names


def _violations(package, forbidden, allowed=()):
    found = []
    for path in _python_files(package):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + '.') for f in forbidden) \
                    and not any(name == a or name.startswith(a + '.')
                                for a in allowed):
                found.append('%s imports %s' % (
                    os.path.relpath(path, ROOT), name))
    return found


def test_translate_is_pure():
    assert _violations('nova_xhv.translate', ('nova', 'cinder', 'nova_xhv'),
                       allowed=('nova_xhv.translate',)) == []


def test_backends_never_import_migration_or_the_driver():
    assert _violations('nova_xhv.backends', (
        'nova_xhv.migration', 'nova_xhv.driver', 'nova_xhv.scheduler',
        'nova_xhv.cmd')) == []


def _backend_packages():
    top = os.path.join(ROOT, 'nova_xhv', 'backends')
    return sorted(name for name in os.listdir(top)
                  if os.path.isfile(os.path.join(top, name, '__init__.py')))


@pytest.mark.parametrize('package', _backend_packages())
def test_backends_never_import_each_other(package):
    others = ['nova_xhv.backends.%s' % other for other in _backend_packages()
              if other != package]
    assert _violations('nova_xhv.backends.%s' % package, others) == []


def test_a_family_facts_module_is_light():
    # Every compute and the scheduler read every family's facts, also of
    # families whose client libraries are not installed.
    for package in _backend_packages():
        path = os.path.join(ROOT, 'nova_xhv', 'backends', package,
                            'facts.py')
        assert os.path.isfile(path), '%s has no facts.py' % package
        heavy = [n for n in _imports(path)
                 if n.split('.')[0] != 'nova_xhv'
                 or not (n.startswith('nova_xhv.backends.family')
                         or n.startswith('nova_xhv.translate.formats')
                         or n in ('nova_xhv.backends', 'nova_xhv.translate'))]
        assert heavy == [], '%s/facts.py imports %s' % (package, heavy)


def test_move_service_is_the_drivers_one_door_into_migration():
    used = {n for n in _imports(os.path.join(ROOT, 'nova_xhv', 'driver.py'))
            if n.startswith('nova_xhv.migration')}
    assert used == {'nova_xhv.migration.service'}


def test_cinder_xhv_imports_no_nova_and_no_nova_options():
    # The families' facts (family.py, <family>/facts.py) import nothing of
    # Nova: the volume driver reads what each family attaches.
    assert _violations('cinder_xhv', ('nova', 'nova_xhv'),
                       allowed=('nova_xhv.translate',
                                'nova_xhv.backends.family')) == []


def test_family_facts_load_nothing_of_nova():
    code = ('import sys\n'
            'from nova_xhv.backends import family\n'
            'assert family.families(), "no family installed"\n'
            'print(sorted(m for m in sys.modules if m == "nova" or '
            'm.startswith(("nova.", "cinder", "pyVmomi", "libvirt"))))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == '[]'


def test_neutron_xhv_reads_only_the_families_facts():
    # It runs inside neutron-server: no Nova, no backend code, only the
    # light facts (nova_xhv.backends.family and the engine's format names).
    assert _violations('neutron_xhv', ('nova', 'nova_xhv', 'cinder_xhv'),
                       allowed=('nova_xhv.backends.family',
                                'nova_xhv.translate.formats')) == []


def test_the_ml2_driver_keeps_no_table_per_family():
    family_names = {'kvm', 'vmware', 'hyperv', 'xen', 'fake', 'qemu',
                    'dvs', 'ovs'}
    found = []
    for path in _python_files('neutron_xhv'):
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and \
                    isinstance(node.value, str) and \
                    node.value.lower() in family_names:
                found.append('%s:%d %r' % (os.path.relpath(path, ROOT),
                                           node.lineno, node.value))
    assert found == []


def test_migration_and_the_engine_keep_no_table_per_family():
    # Family names as string literals belong to the families' own
    # packages; the migration package reads them from their facts.
    family_names = {'kvm', 'vmware', 'hyperv', 'xen', 'fake', 'qemu'}
    found = []
    for package in ('nova_xhv.migration', 'nova_xhv.scheduler',
                    'nova_xhv.translate'):
        for path in _python_files(package):
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and \
                        isinstance(node.value, str) and \
                        node.value.lower() in family_names:
                    found.append('%s:%d %r' % (os.path.relpath(path, ROOT),
                                               node.lineno, node.value))
    assert found == []


def test_qemu_runs_only_through_the_engine():
    # Limits, timeouts and logging live in nova_xhv/translate/qemu_img.py.
    # Exempt: nova_xhv/cmd/demo.py builds a hostile image on purpose, to
    # show the gate refusing it.
    found = []
    allowed = (os.path.join(ROOT, 'nova_xhv', 'translate'),
               os.path.join(ROOT, 'nova_xhv', 'cmd', 'demo.py'))
    for package in ('nova_xhv', 'cinder_xhv'):
        for path in _python_files(package):
            if path.startswith(allowed):
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in (
                        'qemu-img', 'qemu-nbd'):
                    found.append('%s:%d' % (os.path.relpath(path, ROOT),
                                            node.lineno))
    assert found == []


def test_one_list_of_format_names():
    # Only nova_xhv/translate/formats.py spells out the list of formats.
    found = []
    owner = os.path.join(ROOT, 'nova_xhv', 'translate', 'formats.py')
    for package in ('nova_xhv', 'cinder_xhv'):
        for path in _python_files(package):
            if path == owner:
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    names = {e.value for e in node.elts
                             if isinstance(e, ast.Constant)}
                    if len(names & FORMAT_NAMES) >= 4:
                        found.append('%s:%d' % (os.path.relpath(path, ROOT),
                                                node.lineno))
    assert found == []


def test_the_scan_sees_an_import():
    # The scanner itself finds imports (migration reads backend facts).
    assert _violations('nova_xhv.migration', ('nova_xhv.backends',)) != []
    assert 'nova_xhv.backends.family' in _imports(os.path.join(
        ROOT, 'nova_xhv', 'migration', 'hardware.py'))


def test_the_policy_core_imports_no_nova():
    # Only the adapters (nova_input, nova_report) speak Nova: the engine,
    # templates, input builder, CADF event and enforcer run anywhere (the
    # command line, a test, another service).
    found = []
    for path in _python_files('nova_xhv.policy'):
        if os.path.basename(path) in ('nova_input.py', 'nova_report.py'):
            continue
        found += ['%s imports %s' % (os.path.relpath(path, ROOT), name)
                  for name in sorted(_imports(path))
                  if name == 'nova' or name.startswith('nova.')
                  or name.startswith(('nova_xhv.migration', 'nova_xhv.driver',
                                      'nova_xhv.scheduler'))]
    assert found == []
