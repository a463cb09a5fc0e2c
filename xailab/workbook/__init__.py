"""The workbook machinery: run every notebook headlessly (:mod:`.runner`, ``python -m
xailab.workbook``) and write the report of what reproduces (:mod:`.report`) from the claims the
notebooks record with :mod:`xailab.claims`."""


def main(argv=None) -> int:
    """``python -m xailab.workbook``: see :mod:`xailab.workbook.runner`."""
    from xailab.workbook.runner import main as run

    return run(argv)
