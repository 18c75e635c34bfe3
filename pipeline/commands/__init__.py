"""What a user runs that is not a stage: plan, preflight, resolve, status, report, serve, import, tools, synth.

Each imports nothing but pipeline/lib/; Make calls them (`make plan`, `make serve`, ...).
"""
