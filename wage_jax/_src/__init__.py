"""The implementation of ``wage_jax``: private; the public names are re-exported by ``wage_jax`` and its namespaces."""
