"""veriflow's benchmark: flows and confirm steps against a bare baseline, timers at scale, memory."""
