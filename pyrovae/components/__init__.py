"""Swappable components: networks, priors, likelihoods and guide families, each in a registry."""
