"""A backend module whose client library is not installed."""

import xhv_client_library_that_is_not_installed  # noqa: F401
