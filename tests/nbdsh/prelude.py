# Shared by the nbdsh scripts of tests/nbd_nbdsh.rs, run first in the same namespace.
# The environment gives the server: NBD_URI (a read-write export named NBD_NAME, 16 MiB),
# NBD_RO_URI (a read-only export of the same kind, when the script needs one).
import errno
import os

URI = os.environ["NBD_URI"]
NAME = os.environ["NBD_NAME"]
MIB = 1 << 20


def handle(structured=True, strict=True, meta=True):
    """A new handle: structured replies asked or not, libnbd's client-side checks on or off
    (off, requests the server must refuse reach it), base:allocation asked or not."""
    c = nbd.NBD()
    c.set_request_structured_replies(structured)
    if not strict:
        c.set_strict_mode(0)
    if meta:
        c.add_meta_context("base:allocation")
    return c


def connected(uri=URI, **kwargs):
    c = handle(**kwargs)
    c.connect_uri(uri)
    return c


def fails_with(expected, what, *args, **kwargs):
    """Calls what(*args) and checks it fails with one of the errno values in expected."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    try:
        what(*args, **kwargs)
    except nbd.Error as e:
        assert e.errnum in expected, "%s: %s (errno %s), expected %s" % (
            what.__name__, e.string, e.errnum, [errno.errorcode[x] for x in expected])
        return
    raise AssertionError("%s%s succeeded; expected %s" % (
        what.__name__, args, [errno.errorcode[x] for x in expected]))


def extents(c, count, offset, flags=0):
    """The base:allocation extents of [offset, offset+count) as [(length, flags)]."""
    got = []

    def callback(context, off, entries, err):
        assert context == "base:allocation", context
        assert off == offset, (off, offset)
        got.append(list(zip(entries[0::2], entries[1::2])))
        return 0

    c.block_status(count, offset, callback, flags)
    assert len(got) == 1, "one chunk per context, got %d" % len(got)
    return got[0]
