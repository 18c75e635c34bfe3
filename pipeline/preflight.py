"""Before any stage runs: can this recipe run on this machine? Every missing thing, at once.

    python -m pipeline.preflight --recipe llama31-8b-tools

Checks the GPU (4-bit needs CUDA), the model and tokenizer (built in, a local folder, the Hugging
Face cache, or a reachable hub), and the backend's packages. Exits 2 with one message naming
everything missing and how to get it, before a single weight moves.
"""

from __future__ import annotations

import argparse

from pipeline import recipe as recipe_mod
from pipeline.lib.common import StageError, console
from pipeline.recipe import RecipeError


def problems(recipe: recipe_mod.Recipe) -> list[str]:
    from pipeline.lib.backends import cuda_available, installed, resolve_backend
    from pipeline.lib.models import resolve

    found = []
    if recipe.load_in_4bit and not cuda_available():
        found.append(f"an NVIDIA GPU with CUDA: recipe {recipe.name} loads its base in 4-bit (load_in_4bit: true). "
                     "Run it on a GPU machine (`make gpu-check` there first); on this machine `make train` runs the "
                     "embedded CPU default.")
    else:
        try:
            resolve_backend(recipe)
        except StageError as e:
            found.append(str(e))
    if recipe.load_in_4bit and not (installed("unsloth") or installed("bitsandbytes")):
        found.append("the GPU extras (unsloth, bitsandbytes): `make venv` installs them on a machine with an NVIDIA GPU.")
    for name, what in ((recipe.model, "model"), (recipe.tokenizer, "tokenizer")):
        if not name:
            continue
        try:
            resolve(name, what)
        except StageError as e:
            found.append(str(e))
    return found


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="smollm2-135m-tools")
    ap.add_argument("--run", default=None)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    try:
        recipe = recipe_mod.load(a.recipe, a.overrides)
    except RecipeError as e:
        recipe_mod.fail(str(e))
    found = problems(recipe)
    if found:
        recipe_mod.fail(f"recipe {recipe.name} cannot run on this machine; missing:\n"
                        + "\n".join(f"  - {p}" for p in found))
    console.print(f"[dim]preflight: {recipe.name} can run here[/]")


if __name__ == "__main__":
    main()
