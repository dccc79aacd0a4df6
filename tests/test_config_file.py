"""The package's Dask config file (``cleo_dask/cleo_dask.yaml``): every default is read by Dask."""
from __future__ import annotations

import pathlib

import yaml

import cleo_dask  # noqa: F401 - registers the defaults with dask.config
import dask

FILE = pathlib.Path(__file__).resolve().parents[1] / "cleo_dask" / "cleo_dask.yaml"


class _Strict(yaml.SafeLoader):
    """A loader that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise AssertionError(f"{FILE.name} line {node.start_mark.line + 1}: keys given twice: {twice}")
    return loader.construct_mapping(node, deep=deep)


_Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def test_no_setting_is_given_twice():
    """Two sections of one name (say two ``dynamic:`` blocks) would drop the first one's settings."""
    yaml.load(FILE.read_text(), Loader=_Strict)


def test_dask_config_holds_every_default_of_the_file():
    def leaves(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, f"{prefix}.{k}")
            else:
                yield f"{prefix}.{k}", v
    data = yaml.safe_load(FILE.read_text())
    for key, value in leaves(data["cleo_dask"], "cleo_dask"):
        assert dask.config.get(key) == value, key
