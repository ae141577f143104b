"""Looking at distilled sets: codebook-token diagnostics (the HIERAMP paper's section 5), pictures
and the static HTML report.
Imports no method package: what it needs of a method comes through the run's manifest and the core.

Modules: `token_usage` (entropy, coverage, the Figure 3 comparison and Figure 4 maps, numpy only),
`run_tokeniser` (the VQ-VAE of a run and the per-scale token maps of its images), `diagnose`
(`ddbench analyze tokens`: both together, written as JSON and figures), `figures`
(matplotlib), `report` (the HTML page) and `commands` (`ddbench analyze`, `ddbench report`).
Pictures need the `analysis` extra: pip install 'ddbench[analysis]'.
"""
