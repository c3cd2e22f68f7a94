"""SPoT (Vu et al. 2022, "SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer").

  library.py     a folder of trained source prompts and their task embeddings
  similarity.py  task similarity from prompts (cosine of average tokens, per-token average)
  transfer.py    target training from source prompts vs the default init; retrieval
  matrix.py      sources x targets transfer grid: heatmap, correlations, retrieval table

Their commands (similar, transfer, transfer-matrix, library list|add|remove) are in cli/spot.py.

Mixtures of tasks (one prompt on several sources) live with the tasks: tasks/mixture.py.
"""
