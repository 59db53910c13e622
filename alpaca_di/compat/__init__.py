"""alpaca-py's stream classes (``Shared*Stream``) served by the shared hubs."""
