"""Researcher scripts (``script.run``): the algorithm, and the API scripts see in the sandbox."""
