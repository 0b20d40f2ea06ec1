"""Report stage (workflow/rules/tables.smk): the scorecard of the papers' claims and the run's
provenance."""
