"""A tiny on-disk journal of unfinished moves, one JSON file per move.

Both sides write one: a destination for what it staged, a source for the
original it keeps (powered off) until confirm or revert.  Records are
small and written atomically (temporary file + rename); a compute reads
them at start to remove leftovers of a crash.
"""

import json
import os
import shutil
import tempfile

SUFFIX = '.json'
WORKDIR_SUFFIX = '.work'


class Journal(object):

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def _ensure(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)

    def _path(self, key):
        return os.path.join(self.state_dir, key + SUFFIX)

    def workdir(self, key):
        """Private folder for the disks of one move."""
        return os.path.join(self.state_dir, key + WORKDIR_SUFFIX)

    def write(self, key, record):
        self._ensure()
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix='.tmp-')
        with os.fdopen(fd, 'w') as f:
            json.dump(record, f)
        os.rename(tmp, self._path(key))

    def read(self, key):
        try:
            with open(self._path(key)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def remove(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def records(self):
        if not os.path.isdir(self.state_dir):
            return []
        found = []
        for name in sorted(os.listdir(self.state_dir)):
            if name.endswith(SUFFIX) and not name.startswith('.'):
                key = name[:-len(SUFFIX)]
                found.append((key, self.read(key) or {}))
        return found

    def find(self, role, instance_uuid):
        """Keys of records of ``role`` for one instance."""
        return [key for key, record in self.records()
                if record.get('role') == role
                and record.get('instance_uuid') == instance_uuid]

    def remove_orphan_workdirs(self):
        """Work folders and temporary files whose move has no record."""
        if not os.path.isdir(self.state_dir):
            return
        for name in os.listdir(self.state_dir):
            path = os.path.join(self.state_dir, name)
            if name.startswith('.tmp-'):
                os.unlink(path)
            elif name.endswith(WORKDIR_SUFFIX) and not os.path.exists(
                    self._path(name[:-len(WORKDIR_SUFFIX)])):
                shutil.rmtree(path, ignore_errors=True)
