"""The paper's second half over a finished run (``sdd-jax analyze``): re-dense training, linear
interpolation, filter-normalised 1-D loss curves, sharpness in the unpruned subspace, calibration,
and the learning distance against flatness as rank correlations with bootstrap intervals.

Small modules of pure functions over pytrees (:mod:`.hessian`, :mod:`.landscape`,
:mod:`.interpolate`, :mod:`.evaluation`, :mod:`.calibration`, :mod:`.stats`), the re-dense
training (:mod:`.redense`), and the cached, resumable pipeline with its tables, figures and
report (:mod:`.pipeline`, :mod:`.tables`, :mod:`.figures`, :mod:`.report`).
"""
