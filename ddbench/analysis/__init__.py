"""Looking at distilled sets: codebook-token diagnostics (the HIERAMP paper's section 5), pictures
and the static HTML report.

Modules: `tokens` (entropy, coverage, the Figure 3 comparison and Figure 4 maps, numpy only),
`tokenise` (the VQ-VAE of a run and the per-scale token maps of its images), `figures`
(matplotlib), `report` (the HTML page) and `commands` (`ddbench analyze`, `ddbench report`).
Pictures need the `analysis` extra: pip install 'ddbench[analysis]'.
"""
