"""Rollout reports: one self-contained HTML page (plotly, no CDN) per rollout, from a local run's
recording or from a cluster rollout's Prometheus series and Events."""
