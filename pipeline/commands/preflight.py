"""Before any stage runs: can this recipe run on this machine? Every missing thing, at once.

    python -m pipeline.commands.preflight --recipe llama31-8b-tools

Checks the GPU (4-bit needs CUDA), the model and tokenizer (built in, a local folder, the Hugging
Face cache, or a reachable hub), and the backend's packages. Exits 2 with one message naming
everything missing and how to get it, before a single weight moves.
"""

from __future__ import annotations

from pipeline.lib import recipe as recipe_mod
from pipeline.lib.common import StageError, command, console
from pipeline.lib.recipe import Recipe


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
    for tracker in recipe.train.report_to:
        package = recipe_mod.TRACKERS[tracker]
        if not installed(package):
            found.append(f"{package}, which train.report_to={tracker} reports to: `.venv/bin/pip install {package}`, "
                         f"or leave {tracker} out of train.report_to.")
    for name, what in ((recipe.model, "model"), (recipe.tokenizer, "tokenizer")):
        if not name:
            continue
        try:
            resolve(name, what)
        except StageError as e:
            found.append(str(e))
    return found


def main(argv=None) -> None:
    def body(recipe: Recipe, _run_dir, _args) -> None:
        found = problems(recipe)
        if found:
            raise StageError(f"recipe {recipe.name} cannot run on this machine; missing:\n"
                             + "\n".join(f"  - {p}" for p in found))
        console.print(f"[dim]preflight: {recipe.name} can run here[/]")

    command("preflight", __doc__, argv, body)


if __name__ == "__main__":
    main()
