"""The operator console: a static page (`/console`) and the `/v1/console` routes it reads."""
