"""How a library's error is put into vitedge's one-line message."""

from __future__ import annotations

import pytest

from vitedge.core.errors import first_line, shortened


@pytest.mark.parametrize("limit", [20, 21, 160])
def test_a_long_reason_gives_up_its_middle_not_its_end(limit):
    reason = "cannot read '/home/me/" + "deep/" * 60 + "preprocessor_config.json': not a valid JSON file"
    short = shortened(reason, limit)
    assert len(short) == limit and "..." in short
    assert short.startswith(reason[: (limit - 3) // 2]) and short.endswith(reason[-((limit - 2) // 2) :])
    assert shortened(reason, 400).endswith("not a valid JSON file")
    assert shortened("fits", 4) == "fits"


def test_first_line_skips_a_source_location_and_shortens_the_reason():
    error = RuntimeError("Exception from src/core/src/node.cpp:84:\n  cannot open " + "x" * 300 + " as a model\n")
    assert first_line(error) == "cannot open " + "x" * 300 + " as a model"
    assert first_line(error, 60).endswith(" as a model") and len(first_line(error, 60)) == 60
    assert first_line(ValueError()) == "ValueError"
