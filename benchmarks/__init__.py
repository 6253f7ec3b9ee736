"""interp's benchmarks: interp side by side with the straightforward implementation the seeds use."""
