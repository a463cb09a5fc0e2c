"""The workbook machinery: run every notebook headlessly (:mod:`.runner`, ``python -m
xailab.workbook``), record each paper's claims as the notebooks check them (:mod:`.claims`), and
write the report of what reproduces (:mod:`.report`, :mod:`.files`)."""


def main(argv=None) -> int:
    """``python -m xailab.workbook``: see :mod:`xailab.workbook.runner`."""
    from xailab.workbook.runner import main as run

    return run(argv)
