"""tooltune: fine-tune an open model to call your tools, one stage at a time.

The chain (each a module with `run(recipe, run_dir) -> Path` and a `python -m` entry point):
validate -> count -> load -> train -> export -> evaluate. Stages talk only through files
under runs/<RUN>/.
"""

__version__ = "0.1.0"

