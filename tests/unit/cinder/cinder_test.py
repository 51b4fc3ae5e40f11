"""Cinder's own TestCase, made to work under pytest."""

# cinder.tests.unit applies Cinder's eventlet monkey patching first.
from cinder.tests.unit import test  # noqa: I202


class TestCase(test.TestCase):
    """cinder.tests.unit.test.TestCase (sqlite, ``fake:/`` messaging)."""

    def _common_cleanup(self):
        # Cinder's cleanup deletes every public instance attribute, including
        # the bound test method pytest sets and deletes itself afterwards.
        method = self.__dict__.get(self._testMethodName)
        super()._common_cleanup()
        if method is not None:
            setattr(self, self._testMethodName, method)
