"""``alpaca-di demo``: an application container over the emulator, with a live view."""
