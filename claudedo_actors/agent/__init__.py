"""The agent process: its command line, prompts, stream-json output and the run's transcript."""
