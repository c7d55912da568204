"""Who may call: the key management API, for admins (every key) and merchants (their own)."""
