"""Figures built from interp's analysis results (figures only; the numbers come from the analysis modules).

Static figures are plotly ``Figure``\\ s (:mod:`~interp.plots.circuits`, :mod:`~interp.plots.activations`,
:mod:`~interp.plots.subspace`); :mod:`~interp.plots.attention_view` renders interactive circuitsvis
attention views for a notebook (the ``notebook`` extra).
"""
