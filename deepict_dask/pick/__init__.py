"""Picking: probability map -> clusters -> filtered coordinate table (``deepict pick``, a run's pick stage).

Public API::

    from deepict_dask.pick import PickOptions, open_map, pick, write_outputs
    result = pick(open_map("TS_01.ome.zarr"), PickOptions(threshold=0.5, radius="60 A"))
    write_outputs(result, "TS_01_picks.star")

Every setting is a field of :class:`PickOptions` (the clustering method is ``options.method``, one of
:func:`available_methods`; a new method is one module in :mod:`.methods`). Names are imported on
first use, so reading the options (config checks, ``deepict --help``) does not build the Dask
machinery of :mod:`.api`.
"""

from __future__ import annotations

from deepict_dask.lazy import lazy_namespace

__all__, __getattr__ = lazy_namespace(__name__, {
    "ContextRule": "options",
    "PickOptions": "options",
    "PickResult": "api",
    "map_classes": "api",
    "merge_results": "api",
    "open_map": "api",
    "pick": "api",
    "plan_picks": "api",
    "tuned_settings": "api",
    "with_tuned": "api",
    "write_outputs": "api",
    "ClusterMethod": "label",
    "MethodParams": "methods",
    "available_methods": "methods",
    "get_method": "methods",
    "register_method": "methods",
    "unregister_method": "methods",
})
