"""The wheel adds only nova/virt/xhv/* to Nova's tree.

So installing XHV never overwrites a Nova file and uninstalling it (pip
removes exactly what the wheel's RECORD lists) leaves Nova intact.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class TestWheel(unittest.TestCase):

    def test_wheel_adds_only_nova_virt_xhv(self):
        work = tempfile.mkdtemp(prefix='xhv-wheel-')
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        # Build from a copy: no build/ or egg-info litter in the work tree.
        # PBR_VERSION: the copy has no git history to take a version from.
        tree = os.path.join(work, 'src')
        shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(
            '.git', 'build', 'dist', '*.egg-info', '__pycache__', '.tox',
            '.pytest_cache'))
        env = dict(os.environ, PBR_VERSION='1.0.0')
        result = subprocess.run(
            (sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
             '--no-build-isolation', '-w', os.path.join(work, 'out'), tree),
            capture_output=True, text=True, env=env)
        self.assertEqual(0, result.returncode, result.stderr)
        wheels = os.listdir(os.path.join(work, 'out'))
        self.assertEqual(1, len(wheels), wheels)
        with zipfile.ZipFile(os.path.join(work, 'out', wheels[0])) as wheel:
            names = wheel.namelist()
            record = [n for n in names if n.endswith('.dist-info/RECORD')]
            self.assertEqual(1, len(record))
            recorded = [line.split(',')[0] for line in
                        wheel.read(record[0]).decode().splitlines() if line]

        for listing in (names, recorded):
            nova_files = sorted(n for n in listing if n.startswith('nova/'))
            self.assertIn('nova/virt/xhv/__init__.py', nova_files)
            self.assertEqual(
                [], [n for n in nova_files
                     if not n.startswith('nova/virt/xhv/')])
        self.assertIn('nova_xhv/driver.py', names)
        self.assertIn('nova_xhv/backends/libvirt/backend.py', names)
