"""What a notebook shows: figures, tables, widgets and the sentences after them. It is handed
numbers and trained models; it trains nothing and scores nothing.

  plots      figures (PNG and GIF, saved reproducibly) and image grids
  tables     tables shown as styled HTML or as a figure
  widgets    the notebooks' interactive explorers (noise levels, class samples)
  readings   the sentences after a figure or a table, read from its numbers (no torch)

Import the modules (``from diffnb.course import plots, readings``): this file imports none of
them, so ``diffnb.course.readings`` stays light.
"""
