# Every command, with and without structured replies: READ, WRITE (with FUA), FLUSH, TRIM,
# WRITE_ZEROES (with NO_HOLE and FAST_ZERO), CACHE, BLOCK_STATUS (with REQ_ONE), DISC; and many
# requests in flight at once.

for structured in (True, False):
    c = connected(structured=structured)
    assert c.get_structured_replies_negotiated() == structured
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_cache", "can_multi_conn"):
        assert getattr(c, flag)(), flag
    base = (2 if structured else 8) * MIB
    data = bytearray(os.urandom(256 * 1024))

    c.pwrite(data, base)
    assert c.pread(len(data), base) == data
    c.pwrite(data[:4096], base + MIB, nbd.CMD_FLAG_FUA)
    assert c.pread(4096, base + MIB) == data[:4096]
    c.flush()
    # An unaligned read and write inside what was written.
    c.pwrite(b"abc", base + 7)
    assert c.pread(10, base + 5) == data[5:7] + b"abc" + data[10:15]

    c.zero(65536, base)
    assert c.pread(65536, base) == bytearray(65536)
    c.zero(65536, base + 65536, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
    assert c.pread(65536, base + 65536) == bytearray(65536)
    if c.can_fast_zero():
        # FAST_ZERO either zeroes at once or fails with ENOTSUP, never slowly.
        try:
            c.zero(65536, base + 131072, nbd.CMD_FLAG_FAST_ZERO)
            assert c.pread(65536, base + 131072) == bytearray(65536)
        except nbd.Error as e:
            assert e.errnum == errno.ENOTSUP, e

    c.trim(MIB, base + 2 * MIB)
    c.trim(65536, base + 3 * MIB, nbd.CMD_FLAG_FUA)
    c.cache(MIB, base)

    if structured:
        # The area trimmed is a hole that reads as zeroes; written data is data.
        e = extents(c, MIB, base + 2 * MIB)
        assert e and all(length > 0 for length, _ in e), e
        assert e[0][1] == nbd.STATE_HOLE | nbd.STATE_ZERO, e
        e = extents(c, 4096, base + MIB)
        assert e[0][1] & nbd.STATE_HOLE == 0, e
        # REQ_ONE: one extent, not past the request.
        e = extents(c, 16 * MIB - base, base, nbd.CMD_FLAG_REQ_ONE)
        assert len(e) == 1 and 0 < e[0][0] <= 16 * MIB - base, e
        # The whole export in one request: at least one extent, none empty.
        e = extents(c, 16 * MIB, 0)
        assert e and all(length > 0 for length, _ in e), e
    else:
        assert not c.can_meta_context("base:allocation")

    # 64 requests in flight at once; replies may come back in any order.
    buffers = []
    for i in range(64):
        buf = nbd.Buffer.from_bytearray(bytearray([i]) * 4096)
        buffers.append(buf)
        c.aio_pwrite(buf, base + 4 * MIB + i * 4096)
    while c.aio_in_flight() > 0:
        c.poll(-1)
    reads = []
    for i in range(64):
        buf = nbd.Buffer(4096)
        reads.append(buf)
        c.aio_pread(buf, base + 4 * MIB + i * 4096)
    while c.aio_in_flight() > 0:
        c.poll(-1)
    for i, buf in enumerate(reads):
        assert buf.to_bytearray() == bytearray([i]) * 4096, i

    # DISC: the server closes the connection.
    c.shutdown()

# Multi-conn: a write on one connection, a flush on a second, the data read on a third.
a, b, r = connected(), connected(), connected()
data = bytearray(os.urandom(65536))
a.pwrite(data, 12 * MIB)
b.flush()
assert r.pread(65536, 12 * MIB) == data
for c in (a, b, r):
    c.shutdown()
