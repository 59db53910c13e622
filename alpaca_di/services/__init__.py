"""Services over the shared hubs: pricing, trading, the REST manager and their protocols."""
