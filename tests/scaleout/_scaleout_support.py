"""Constants shared by the scale-out tests (a uniquely named module: conftest names clash)."""

from __future__ import annotations

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = "PKSCALEOUT0001"
SECRET = "scale-out-secret-never-in-redis"
