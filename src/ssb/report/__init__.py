"""What runs and comparisons report: statistics, paired tables, the compute ledger, the rollout funnel, plots and model cards."""
