"""Everything that talks to Redis: connecting (`client`), the key names (`keys`), the Lua scripts
(`scripts`), the store's reads and atomic commits (`store`), the outbox streams (`outbox`), and
the pure translation of a decision into a commit's writes (`plan`)."""
