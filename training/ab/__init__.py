"""A/B evaluation reports: is model B better than model A, by how much, can we trust it, and should we ship it?

Offline (`offline`): two runs scored on the same test users, compared pairwise (refused when the
runs' data differ). Online (`online`): serving logs of a live experiment (`logs`), with SRM, power,
CUPED, always-valid monitoring over daily looks (`sequential`), guardrails (`guardrails`) and,
for team-draft logs, the interleaving preference (`interleaving_report`). Off-policy (`ope`): a
candidate run's click rate estimated from logged propensities. Every report leads with a decision
(`decision`); `render` writes it as HTML (figures from `plots`), JSON and Markdown. `simulate`
(per-user counts) and `world` (users x items with an exact ground truth) plant known effects for
tests, benchmarks and `recsys ab-simulate`.
"""
