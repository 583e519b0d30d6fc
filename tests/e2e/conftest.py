"""Attach the ComfyUI server log to the report of a failed end-to-end test."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    server = getattr(item, "funcargs", {}).get("comfyui")
    if report.failed and server is not None:
        report.sections.append(("ComfyUI server log", server.log_tail()))
    return report
