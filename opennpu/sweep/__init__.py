"""``opennpu sweep``: design-space exploration on Ray with the cycle-exact golden model.

- ``spec``: the TOML spec (workloads, axes, filter) -> validated ``Point``s;
- ``expr``: the filter expression;
- ``point``: one point measured on the golden model;
- ``store``: the results folder (CSV appended per point, JSON sidecar, resume);
- ``source``: the code version and the package shipped to Ray workers;
- ``runner``: the points as Ray tasks (local or a cluster), progress bar;
- ``report``: Pareto fronts, plots and the summary Markdown.
"""
