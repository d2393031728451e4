"""What the tests and the benchmarks share: the real daemon as a child process, site cleanup, the test image.

Not part of the installed package; both `tests/` and `bench/` import it from the checkout.
"""
