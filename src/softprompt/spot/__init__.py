"""SPoT (Vu et al. 2022, "SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer").

  library.py          a folder of trained source prompts and their task embeddings; the built-in one
  build.py            a library built from sources trained to convergence (resumable, spread over workers)
  chance.py           did a source learn its task: its dev score against the best input-blind answer
  similarity.py       task similarity from prompts (cosine of average tokens, per-token average)
  transfer.py         target training from source prompts vs the default init; retrieval
  matrix.py           sources x targets transfer grid: heatmap, correlations, retrieval table
  stats.py            paired tests over seeds: bootstrap interval, exact sign-flip and Wilcoxon p
  study.py            the transfer study: targets x inits x seeds to convergence, with significance
  embedding_study.py  which task embedding (step, length, cosine) best predicts the gain

Their commands (similar, transfer, transfer-matrix) are in cli/spot.py, library
list|add|remove|build|baselines in cli/library.py, transfer-study and embedding-study in
cli/transfer_study.py. The built-in prompts are package data in softprompt/pretrained/.

Mixtures of tasks (one prompt on several sources) live with the tasks: tasks/mixture.py.
"""
