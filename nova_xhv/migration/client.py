"""Signed control requests to another compute's exchange endpoint.

Plain ``http.client`` with the engine's SSL context (verification on
unless ``[xhv] exchange_insecure``; see ``remote.ssl_context`` for why it
behaves the same on native threads and under eventlet).
"""

import http.client
import ssl
import time
import urllib.parse

from oslo_log import log as logging
from oslo_serialization import jsonutils
import requests

from nova_xhv.migration import signing
from nova_xhv import translate
from nova_xhv.translate import remote

LOG = logging.getLogger(__name__)


# An endpoint at its connection caps answers 503 (plain HTTP) or closes
# the connection (TLS): each control call tries this often in all.
SHED_ATTEMPTS = 3
SHED_RETRY_DELAY = 1.0
_SHED_ERRORS = (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError,
                http.client.RemoteDisconnected)


class ExchangeError(Exception):
    """A peer refused or failed a control request, or cannot be reached."""

    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.status = status


class ExchangeClient(object):

    def __init__(self, secret, ca_file=None, insecure=False, timeout=60):
        if not secret:
            raise ExchangeError(
                reason='set [xhv] exchange_secret (the same on every XHV '
                       'compute) for cross-hypervisor moves')
        self._secret = secret
        self._ca_file = ca_file
        self._insecure = insecure
        self._timeout = timeout

    def _connection(self, parts):
        if parts.scheme == 'http':
            return http.client.HTTPConnection(parts.hostname, parts.port,
                                              timeout=self._timeout)
        if parts.scheme != 'https':
            raise ExchangeError(reason='exchange URL %s is neither http nor '
                                       'https' % parts.geturl())
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=self._timeout,
            context=remote.ssl_context(self._ca_file, self._insecure))

    def call(self, base_url, method, path, data=None):
        body = jsonutils.dump_as_bytes(data) if data is not None else b''
        parts = urllib.parse.urlsplit(base_url)
        try:
            target = signing.target_of_url(base_url)
        except ValueError as error:
            raise ExchangeError(reason=str(error))
        for attempt in range(1, SHED_ATTEMPTS + 1):
            # Signed again each time: a nonce is good for one request.
            headers = signing.sign(self._secret, method, target, path, body)
            headers['Content-Type'] = 'application/json'
            connection = self._connection(parts)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                status, text = response.status, response.read()
            except _SHED_ERRORS as error:
                if attempt == SHED_ATTEMPTS:
                    raise ExchangeError(
                        reason='cannot reach the XHV exchange endpoint %s: '
                               '%s' % (base_url, error))
                status = None
            except (OSError, http.client.HTTPException) as error:
                raise ExchangeError(
                    reason='cannot reach the XHV exchange endpoint %s: %s'
                           % (base_url, error))
            finally:
                connection.close()
            if status is not None and (status != 503 or
                                       attempt == SHED_ATTEMPTS):
                break
            # Shed by a busy endpoint (its connection caps; closed before
            # a byte was read over TLS): every call is idempotent, retry.
            time.sleep(SHED_RETRY_DELAY)
        try:
            reply = jsonutils.loads(text)
        except ValueError:
            reply = {'error': text[:200].decode('utf-8', 'replace')}
        if status >= 400:
            raise ExchangeError(reason='%s %s on %s failed (HTTP %d): %s' % (
                method, path, base_url, status, reply.get('error', reply)),
                status=status)
        return reply

    def ping(self, base_url):
        return self.call(base_url, 'GET', '/ping')

    def stage_start(self, base_url, request):
        return self.call(base_url, 'POST', '/stage', request)

    def stage_status(self, base_url, key):
        return self.call(base_url, 'GET', '/stage/%s' % key)

    def stage_discard(self, base_url, key):
        return self.call(base_url, 'DELETE', '/stage/%s' % key)

    def check_volumes(self, base_url, volumes):
        """[{'id', 'reason'}] of the volumes ``base_url`` cannot attach.

        None from a compute of an older XHV, which cannot answer (its
        attach is then the check, after power-off).
        """
        try:
            reply = self.call(base_url, 'POST', '/volumes',
                              {'volumes': volumes})
        except ExchangeError as error:
            if error.status != 404:
                raise
            return None
        return list(reply.get('refused') or ())

    def probe_original(self, base_url, instance_uuid, source_family):
        """The journal key of the original ``base_url`` keeps, or None.

        Asked before a move back to a compute that was the source of a
        move whose finish failed.  A compute of an older XHV answers the
        same question through ``POST /stage``.
        """
        request = {'instance_uuid': instance_uuid,
                   'source_family': source_family}
        try:
            reply = self.call(base_url, 'POST', '/originals', request)
        except ExchangeError as error:
            if error.status != 404:
                raise
            reply = self.call(base_url, 'POST', '/stage', dict(
                request, key='probe-%s' % instance_uuid,
                probe_original=True, disks=[]))
        return reply.get('original_key')


def request_direct_read(source, remote_options, what):
    """The source's one-time direct read of a disk, or None.

    None: the disk is read through the source's exchange endpoint (the
    source offers none, refuses, or asks for an unverified read while
    this compute verifies its peers).
    """
    ask = translate.RemoteSource(
        source.url + '/direct', username=source.username,
        password=source.password, **remote_options)
    try:
        with ask.session() as session:
            response = session.post(ask.url, timeout=60)
            if response.status_code != 200:
                LOG.debug('%s: the source reads %s through its '
                          'exchange (HTTP %d)', what, source.url,
                          response.status_code)
                return None
            answer = response.json()
        direct = translate.DirectRead(
            url=answer['url'], headers=dict(answer['headers']),
            ca_pem=answer.get('ca_pem'),
            insecure=bool(answer.get('insecure')))
        # Storage is read over verified HTTPS only; a malformed URL is
        # refused here, not in the conversion.
        if translate.RemoteSource(direct.url).scheme != 'https':
            raise ValueError('not an https:// URL: %s' % direct.url)
    except (requests.RequestException, translate.TranslationError,
            ValueError, KeyError, TypeError, AttributeError) as error:
        LOG.info('%s: no usable direct read offered (%s: %s); '
                 'reading through the source\'s exchange', what,
                 type(error).__name__, error)
        return None
    if direct.insecure and not remote_options.get('insecure'):
        LOG.warning('%s: the source offers an unverified direct read '
                    'of %s; this compute verifies its peers, so it reads '
                    'through the source\'s exchange instead', what,
                    direct.url)
        return None
    LOG.info('%s: reading %s directly from %s', what,
             source.url, direct.url)
    return direct
