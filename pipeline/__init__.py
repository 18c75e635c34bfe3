"""tooltune: fine-tune an open model to call your tools, one stage at a time.

Three wings, imports pointing one way: `stages/` (the chain validate -> count -> load -> sft -> export
-> evaluate, then gguf and bfcl) and `commands/` (what a user runs that is not a stage) import only
`lib/`, which imports neither. Stages talk only through files under runs/<RUN>/.
"""

__version__ = "0.1.0"
