"""onebit experiment tools: onebit-sweep (grids of runs, locally or on SLURM) and onebit-report
(tables and plots from the runs). docs/experiments.md describes both."""
