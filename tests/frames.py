"""Helpers for tests that read single cells of pandas tables."""


def cell(stats, **keys):
    """The one row of ``stats`` whose columns equal ``keys`` (an assertion error if there is not exactly one)."""
    pick = stats
    for column, value in keys.items():
        pick = pick[pick[column] == value]
    assert len(pick) == 1, keys
    return pick.iloc[0]
