"""A purchaser's (or an on-call person's) contact: the Apprise URLs that reach it, and whether
this deployment may send there (scheme allowlist, no internal hosts). Used by order creation,
to refuse a contact at once, and by notification delivery, to check it again before each send."""
