# Error replies, with and without structured replies, libnbd's own checks off so that the
# server sees the requests: a read or trim past the end (EINVAL), a write or write-zeroes past
# the end (ENOSPC); and the connection goes on after each.

size = 16 * MIB
for structured in (True, False):
    c = connected(structured=structured, strict=False)
    fails_with(errno.EINVAL, c.pread, 4096, size - 512)
    fails_with(errno.EINVAL, c.pread, 512, size)
    fails_with(errno.EINVAL, c.pread, 512, (1 << 63) - 1)
    fails_with(errno.ENOSPC, c.pwrite, bytearray(4096), size - 512)
    fails_with(errno.ENOSPC, c.pwrite, bytearray(512), 1 << 62)
    fails_with(errno.EINVAL, c.trim, 4096, size - 512)
    fails_with((errno.ENOSPC, errno.EINVAL), c.zero, 4096, size)
    if structured:
        fails_with(errno.EINVAL, c.block_status, 512, size, lambda *a: 0)
    # The connection goes on.
    c.pwrite(b"still here", 0)
    assert c.pread(10, 0) == b"still here"
    c.shutdown()
