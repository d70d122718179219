"""The hostile-input tables together: big enough, and every case named once."""

from . import (
    test_bench,
    test_config,
    test_eval,
    test_export,
    test_live,
    test_main,
    test_prepare,
    test_report,
    test_train,
)

TABLES = [
    test_bench.CASES,
    test_config.CASES,
    test_eval.CASES,
    test_export.CASES,
    test_live.CASES,
    test_main.CASES,
    test_prepare.CASES,
    test_report.CASES,
    test_train.CASES,
]


def test_the_table_is_big_enough():
    cases = [case for table in TABLES for case in table]
    assert len(cases) >= 60 and len({c.id for c in cases}) == len(cases)
