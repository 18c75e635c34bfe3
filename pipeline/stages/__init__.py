"""The stages, numbered in the order `make train` runs them (the order itself lives in pipeline/lib/stages.py).

Each is a module with `run(recipe, run_dir) -> Path` and a `main()`; a stage reads the files earlier
stages wrote under runs/<RUN>/ and imports nothing but pipeline/lib/.
"""
