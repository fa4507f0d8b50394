# A read-only export, with and without structured replies: reads work, and every write-like
# command fails with EPERM when libnbd's checks are off; the connection goes on.

RO = os.environ["NBD_RO_URI"]
for structured in (True, False):
    c = connected(RO, structured=structured, strict=False)
    assert c.is_read_only()
    assert c.pread(4096, 0) == bytearray(4096)
    fails_with(errno.EPERM, c.pwrite, bytearray(4096), 0)
    fails_with(errno.EPERM, c.pwrite, bytearray(4096), 0, nbd.CMD_FLAG_FUA)
    fails_with(errno.EPERM, c.trim, 4096, 0)
    fails_with(errno.EPERM, c.zero, 4096, 0)
    assert c.pread(4096, 4096) == bytearray(4096)
    c.shutdown()
