"""The parity harness: wage_jax against wage_torch (qtorch's CPU kernel) and an independent NumPy model.

``wage_parity.corpus`` builds the inputs (ties, subnormals, signed zeros, extremes), ``wage_parity.cases`` the
cases per public function, ``wage_parity.bits`` compares float32 bit patterns, ``wage_parity.spec_model`` is the
contract (docs/contract.md §1-2) written in NumPy, and ``wage-parity`` (``wage_parity.report``) runs every case.
``wage_parity.testing`` holds the helpers the repository's two test suites share.
Needs the ``torch`` extra.
"""
