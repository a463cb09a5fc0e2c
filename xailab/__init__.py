"""xailab: a workbook for explaining neural networks."""
