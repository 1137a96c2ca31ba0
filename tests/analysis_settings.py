"""The cheapest ``sdd-jax analyze`` settings, shared by the tests that run the analysis (in process,
on Cloud Storage and from an installed wheel): a few points per curve, a few Lanczos steps and
probes, one batch, one re-dense epoch."""

TINY_ANALYSIS = [
    "analysis.interp_points=3",
    "analysis.curve_points=3",
    "analysis.lanczos_steps=3",
    "analysis.hutchinson_probes=2",
    "analysis.hessian_batches=1",
    "analysis.bn_batches=1",
    "analysis.bootstrap=20",
    "analysis.redense_epochs=1",
]
