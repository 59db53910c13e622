"""Redis scale-out: one upstream socket per (account, endpoint) for a whole deployment."""
