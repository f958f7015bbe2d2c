"""Running a node: home, embedded NATS, bridge, log facade, supervisor, presence, projector."""
