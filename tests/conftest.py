"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def pydicom_file():
    """``get(name)``: the path of one of pydicom's own test files (real DICOM from scanners and
    toolkits; the larger ones come with the pydicom-data package). Skips the test without it."""
    from pydicom.data import get_testdata_file

    def get(name: str) -> str:
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
        return path

    return get
