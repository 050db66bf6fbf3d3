"""`ebr bench`: the pipeline's cost at marketplace sizes small, medium and large.

Synthetic days are generated into their own EBR_HOME (EBR_HOME/bench/<profile>/) and go day by
day through the real stage functions of ebr.stages, each in a fresh process (as Airflow runs a
task), timed, with its peak memory. Baselines measured in the same run (the machine's
matrix-multiply FLOP/s, exact search over the collection's own vectors, training from scratch on
all history) turn the figures into ratios; the report (EBR_HOME/reports/bench/) checks them
against the targets and fits how each stage's cost grows.

child.py runs one measured step in a process; steps.py holds the steps (stages with probes
around their inner calls, and the baselines); run.py runs a profile; report.py writes the report.
"""
