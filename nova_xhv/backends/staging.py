"""Local staging folders that backends export disks into.

The vSphere and Xen backends copy a server's disks into an ``export-*``
folder under their staging root for the destination to pull; releasing
an export removes exactly those folders and never anything else.
"""

import os
import shutil


def release_export_folders(staging_root, disks):
    """Remove the ``export-*`` folders under staging_root holding disks."""
    root = os.path.realpath(staging_root)
    for folder in {os.path.dirname(os.path.realpath(d.path))
                   for d in disks if d.path}:
        # Only ever our own export folders, never an instance's disks.
        if (os.path.dirname(folder) == root
                and os.path.basename(folder).startswith('export-')):
            shutil.rmtree(folder, ignore_errors=True)
