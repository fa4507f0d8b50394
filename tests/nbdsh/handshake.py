# Handshake and option edge cases: OPT_LIST, OPT_INFO, OPT_GO of an unknown export, OPT_ABORT,
# the meta context options, structured replies refused by the client, no NO_ZEROES.

# OPT_LIST names the export; OPT_INFO describes it and the handshake goes on.
c = handle()
c.set_opt_mode(True)
c.connect_uri(URI)
names = []
assert c.opt_list(lambda name, description: names.append(name)) >= 1
assert NAME in names, names
c.opt_info()
assert c.get_size() == 16 * MIB, c.get_size()

# An unknown export: OPT_INFO and OPT_GO fail (NBD_REP_ERR_UNKNOWN, ENOENT in libnbd), and the
# connection stays in the handshake.
c.set_export_name("no-such-export")
fails_with(errno.ENOENT, c.opt_info)
fails_with(errno.ENOENT, c.opt_go)
assert c.aio_is_negotiating()

# OPT_LIST_META_CONTEXT: exactly base:allocation, for the context and for the "base:" query.
c.set_export_name(NAME)
seen = []
assert c.opt_list_meta_context(lambda context: seen.append(context)) == 1
assert seen == ["base:allocation"], seen
c.clear_meta_contexts()
c.add_meta_context("base:")
seen = []
c.opt_list_meta_context(lambda context: seen.append(context))
assert seen == ["base:allocation"], seen
c.clear_meta_contexts()
c.add_meta_context("base:allocation")
c.add_meta_context("x-no-such-namespace:thing")
c.opt_go()
assert c.can_meta_context("base:allocation")
assert not c.can_meta_context("x-no-such-namespace:thing")
assert c.pread(512, 0) == bytearray(512)
c.shutdown()

# OPT_ABORT ends the handshake cleanly.
c = handle()
c.set_opt_mode(True)
c.connect_uri(URI)
c.opt_abort()
assert c.aio_is_closed()

# No structured replies: the server serves simple replies and no meta context.
c = connected(structured=False)
assert not c.get_structured_replies_negotiated()
assert not c.can_meta_context("base:allocation")
assert c.pread(4096, MIB) == bytearray(4096)
c.shutdown()

# Structured replies asked: negotiated, and base:allocation with them.
c = connected()
assert c.get_structured_replies_negotiated()
assert c.can_meta_context("base:allocation")
c.shutdown()

# A client without NO_ZEROES (and one without either flag: plain newstyle, OPT_EXPORT_NAME).
for flags in (nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE, 0):
    c = handle()
    c.set_handshake_flags(flags)
    c.connect_uri(URI)
    assert c.get_size() == 16 * MIB
    assert c.pread(512, 0) == bytearray(512)
    c.shutdown()
