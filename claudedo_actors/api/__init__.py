"""The node's API: request structs, the decider, and the NATS handlers."""
