"""The live status page (``live dashboard``): leader, HALT, positions, orders, trades, equity and
sleeves over the store, for people who do not run Grafana; a token-guarded kill switch."""
