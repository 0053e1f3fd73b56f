"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): one slate from two rankings.

Showing each user a mix of both variants' rankings, and crediting each click to the variant
("team") that contributed the clicked item, compares the two rankers on the *same* user and the
same request, so the large differences between users cancel. That is why interleaving needs one
to two orders of magnitude less traffic than an A/B test of the same pair.

Team draft: like captains picking players, the team with fewer picks so far picks next (a fair
coin breaks ties), taking its highest-ranked item not already in the slate. Both teams get
(almost) the same number of slots and the same slot positions in expectation, so an unbiased
user clicks each team's items equally often unless one ranking is better.

Core (not serving) so the serving hook and the simulator share one implementation.
"""
from __future__ import annotations

import random
from collections.abc import Sequence


def team_draft(ranking_a: Sequence[str], ranking_b: Sequence[str], k: int, rng: random.Random,
               teams: tuple[str, str] = ("A", "B")) -> tuple[list[str], list[str]]:
    """Interleave two rankings into at most `k` distinct items; returns (items, team of each item).

    Example::

        team_draft(["a", "b", "c"], ["c", "d", "a"], 4, random.Random(7))  # (["c", "a", "d", "b"], ["B", "A", "B", "A"]) or similar
    """
    lists = (list(ranking_a), list(ranking_b))
    pointers, picks = [0, 0], [0, 0]
    items: list[str] = []
    owner: list[str] = []
    shown: set[str] = set()
    while len(items) < k:
        first = 0 if picks[0] < picks[1] else 1 if picks[1] < picks[0] else rng.randrange(2)
        for team in (first, 1 - first):  # the other team picks if this one has nothing new left
            ranking = lists[team]
            while pointers[team] < len(ranking) and ranking[pointers[team]] in shown:
                pointers[team] += 1
            if pointers[team] < len(ranking):
                item = ranking[pointers[team]]
                items.append(item)
                owner.append(teams[team])
                shown.add(item)
                picks[team] += 1
                break
        else:
            break  # both rankings exhausted
    return items, owner


def credit(clicked: Sequence[bool], owner: Sequence[str], teams: tuple[str, str] = ("A", "B")) -> tuple[int, int]:
    """Clicks credited to each team for one interleaved slate."""
    a = sum(1 for c, t in zip(clicked, owner) if c and t == teams[0])
    b = sum(1 for c, t in zip(clicked, owner) if c and t == teams[1])
    return a, b
