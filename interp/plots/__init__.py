"""Plotly figures built from interp's analysis results (figures only; the numbers come from the analysis modules)."""
