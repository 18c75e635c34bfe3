"""The library the stages share: templates and masks, backends and models, packing, generation, files."""
