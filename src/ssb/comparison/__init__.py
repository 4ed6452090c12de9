"""``ssb compare``: the arms on shared rollouts, replicated, and their pooled results."""
