"""Data stage (workflow/rules/data.smk): CT and radiograph ingest, the OAI layouts, the one
radiograph reader, the procedural phantoms, and the splits.

Deliberately empty: the Snakefile imports kneesynth.data.ingest and kneesynth.data.oai at parse
time, in an environment that may hold nothing but Snakemake and numpy.
"""
