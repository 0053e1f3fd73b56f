"""A/B evaluation reports: is model B better than model A, by how much, and can we trust it?

Offline (`offline`): two runs scored on the same test users, compared pairwise. Online
(`online`): serving logs of a live experiment (`logs`), with SRM, power and CUPED. Both build a
`results.Report` from the estimators in `stats` and the checks in `validity`; `render` writes it
as HTML (figures from `plots`), JSON and Markdown. `simulate` plants known effects for tests.
"""
