"""Markers of the data_prep tests (the lead reconciles them with tests/conftest.py)."""


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: subprocesses, real signals, EGL rendering (seconds)")
