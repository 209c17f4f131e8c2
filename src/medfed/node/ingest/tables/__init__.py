"""Tabular de-identification: a per-column strategy (:mod:`.strategy`), its rules
(:mod:`.rules`), the k-anonymity check (:mod:`.kanon`) and the ingest runner
(:mod:`.runner`, ``medfed node ingest table``). See ``docs/deidentification.md``."""
