"""Small Beam combiners the prepare stages share."""

from __future__ import annotations

import collections

import apache_beam as beam


class SumDict(beam.CombineFn):
    """Merges `(key, number)` pairs into one dict of sums, sorted by key.

    Why a dict accumulator: combiner lifting sums each bundle's pairs before
    the shuffle, so a worker holds one entry per distinct key (a topic, a
    stats name), never one per input row.
    """

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, kv):
        acc[kv[0]] += kv[1]
        return acc

    def merge_accumulators(self, accs):
        out = collections.Counter()
        for acc in accs:
            out.update(acc)
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))
