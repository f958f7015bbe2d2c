"""Running tasks: queue, slot and run actors, their messages, task writer, recovery, policy."""
