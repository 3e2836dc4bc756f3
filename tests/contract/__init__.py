"""Harnesses of the plug-in contract suite (tests/test_contract.py), one per registered type.

The suite builds the same tests for every registered source and sink (the Singer SDK's
`get_tap_test_class` is the model). A harness is the small part that differs: how to stand the
plug-in up against real parts and read back what it did. The registries are read only through
`registry.py`; the harness of each type is listed in `harnesses.py`.
"""
