"""Interpretability: activation sites, feature collection, BSP metrics on chess, the SAE baseline.

Importing the package registers every built-in site (``mlp``, ``resid`` and ``sae:DIR``).
"""

from . import sae, sites  # noqa: F401  (registration)
