"""Global-context statistics and plots (GCNet Section 3 as a tool).

- ``context_stats``: batched cosine distance / JSD over all pairs of positions, entropies, gates;
- ``hooks``: forward hooks on the blocks' probes (``ContextRecorder``);
- ``visualize``: attention maps over the frames (matplotlib Agg PNGs);
- ``runner``: ``run_analysis`` / ``run_visualization`` behind tools/analyze_context.py and
  tools/visualize_context.py, and ``analyse_run`` (both for a trained run, the analysis step of ``make demo``).
"""
