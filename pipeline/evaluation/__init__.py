"""Evaluation: measures of runs against qrels (`measures`), paired comparison of runs
(`significance`), report tables (`reports`) and figures (`figures`)."""
