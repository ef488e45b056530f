"""The ``furlora`` command: ``main`` parses and dispatches, one ``<name>_cmd`` module per command
group (train / demo, dataset, targets / lora, plan, compare / inpaint, config, models, cache).

Commands are thin: they parse arguments, call the library and print. Nothing is exported here;
use the library's own packages from Python.
"""
