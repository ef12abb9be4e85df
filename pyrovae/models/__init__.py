"""Models: registered Pyro model/guide pairs built from components."""
