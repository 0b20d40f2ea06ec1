"""Checks of every generator (workflow/rules/checks.smk): memorisation, realism, the reader
study, train-on-synthetic utility, and the controls every check is run on."""
