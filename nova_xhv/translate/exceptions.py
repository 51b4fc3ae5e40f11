"""Errors of the translation engine.

Every message names the file and says what to do about it: these reach
operators through Nova instance faults and ``xhv-convert``'s one-line
refusals.
"""


class TranslationError(Exception):
    """Base class: the translation could not be done; nothing was written.

    Its text is always one line (whitespace collapsed): callers put it in
    instance faults, volume errors and ``xhv-convert``'s refusal line.
    """

    def __str__(self):
        return ' '.join(super().__str__().split())


class UnsafeImage(TranslationError):
    """The image failed a safety rule; qemu-img never opened it.

    ``reasons`` lists every rule that failed, in words an operator can act
    on (e.g. "qcow2 has a backing file").
    """

    def __init__(self, path, reasons):
        self.path = path
        self.reasons = list(reasons)
        super().__init__('%s refused as unsafe: %s' % (
            path, '; '.join(self.reasons)))


class FormatMismatch(UnsafeImage):
    """The content is not the format the caller claimed."""

    def __init__(self, path, claimed, detected):
        self.claimed = claimed
        self.detected = detected
        super().__init__(path, [
            'content is %s, not the claimed %s; pass the real format (or '
            'none to auto-detect) if the file is trusted' % (
                detected, claimed)])


class TLSVerificationFailed(TranslationError):
    """A remote source's certificate did not verify; nothing was read."""


class UnsupportedFormat(TranslationError):
    """A format or subformat the engine does not read or write."""


class ConversionFailed(TranslationError):
    """qemu-img ran and failed (or the result failed verification).

    ``returncode`` and ``stderr`` (the last lines) come from qemu-img when
    it ran; the partial output has already been removed.
    """

    def __init__(self, message, returncode=None, stderr=''):
        self.returncode = returncode
        self.stderr = stderr
        if stderr:
            message = '%s: %s' % (message, stderr.strip().splitlines()[-1])
        super().__init__(message)


class ConversionTimeout(ConversionFailed):
    """qemu-img ran past its wall-clock budget and was killed."""
