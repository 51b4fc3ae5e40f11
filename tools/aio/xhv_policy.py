"""The XHV policy in the all-in-one: files, nova-api's filter, a member.

``<state>/etc/xhv/policy.yaml`` (templates/xhv-policy.yaml) and an empty
``policy.d``; nova.conf's ``[xhv_policy]`` names them (every Nova service
reads it).  nova-api's paste pipelines get XHV's admission filter after
``keystonecontext``, so a forbidden action is answered 403 with the rule
before Nova does any work.
"""

import os
import re
import secrets

FILTER = ('\n[filter:xhvpolicy]\n'
          'paste.filter_factory = nova_xhv.api.admission:filter_factory\n')
MEMBER = 'xhv-demo-member'


def write_configs(cloud):
    cloud.render('xhv-policy.yaml', cloud.conf('xhv', 'policy.yaml'),
                 mode=0o644)
    os.makedirs(cloud.conf('xhv', 'policy.d'), exist_ok=True)
    paste = cloud.conf('nova', 'api-paste.ini')
    with open(paste) as f:
        text = f.read()
    if '[filter:xhvpolicy]' not in text:
        # Both v2.1 pipelines: "... keystonecontext [legacy...] osapi..."
        text = re.sub(r'^(keystone = .*\bkeystonecontext)\b', r'\1 xhvpolicy',
                      text, flags=re.M) + FILTER
        with open(paste, 'w') as f:
            f.write(text)


def member_credentials(cloud, conn):
    """A user with the member role in the admin project (the demo's).

    Returns the environment variables the openstack CLI takes them from
    (never argv); a new password each time.
    """
    password = secrets.token_hex(16)
    ident = conn.identity
    project = ident.find_project('admin', domain_id='default')
    user = ident.find_user(MEMBER, domain_id='default')
    if user is None:
        user = ident.create_user(name=MEMBER, password=password,
                                 domain_id='default')
    else:
        ident.update_user(user, password=password)
    role = ident.find_role('member')
    ident.assign_project_role_to_user(project, user, role)
    return {'OS_USERNAME': MEMBER, 'OS_PASSWORD': password}
