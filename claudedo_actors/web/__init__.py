"""The board in a browser, served by the node (decision 0025)."""
